using System.Buffers.Binary;
using System.Text;

namespace Vdisk.Drivers.Qcow2;

/// <summary>One entry of the internal snapshot table, kept byte-exact (unknown extra data included).</summary>
public sealed class Qcow2Snapshot
{
    /// <summary>Offset of the snapshot's L1 table.</summary>
    public ulong L1TableOffset { get; set; }
    /// <summary>Entries of the snapshot's L1 table.</summary>
    public uint L1Size { get; set; }
    /// <summary>The unique id ("1").</summary>
    public string Id { get; set; } = "";
    /// <summary>The name (tag).</summary>
    public string Name { get; set; } = "";
    /// <summary>Creation time, seconds since the epoch.</summary>
    public uint DateSeconds { get; set; }
    /// <summary>Creation time, nanoseconds part.</summary>
    public uint DateNanoseconds { get; set; }
    /// <summary>Guest clock at creation.</summary>
    public ulong VmClockNanoseconds { get; set; }
    /// <summary>Size of the saved VM state.</summary>
    public ulong VmStateSize { get; set; }
    /// <summary>Virtual disk size at creation, when recorded.</summary>
    public ulong? DiskSize { get; set; }
    /// <summary>Instruction count, when recorded (record/replay).</summary>
    public ulong? Icount { get; set; }
    /// <summary>The extra data as stored.</summary>
    public byte[] ExtraData { get; set; } = [];

    /// <summary>QCOW_MAX_SNAPSHOTS.</summary>
    public const int MaxSnapshots = 65536;

    /// <summary>Reads <paramref name="count"/> entries from the table bytes. Throws on malformed entries.</summary>
    public static List<Qcow2Snapshot> ParseTable(ReadOnlySpan<byte> table, uint count)
    {
        var list = new List<Qcow2Snapshot>((int)Math.Min(count, 1024));
        int pos = 0;
        for (uint i = 0; i < count; i++)
        {
            if (pos + 40 > table.Length) throw new Qcow2FormatException("Snapshot table is truncated");
            var h = table[pos..];
            var s = new Qcow2Snapshot
            {
                L1TableOffset = BinaryPrimitives.ReadUInt64BigEndian(h),
                L1Size = BinaryPrimitives.ReadUInt32BigEndian(h[8..]),
                DateSeconds = BinaryPrimitives.ReadUInt32BigEndian(h[16..]),
                DateNanoseconds = BinaryPrimitives.ReadUInt32BigEndian(h[20..]),
                VmClockNanoseconds = BinaryPrimitives.ReadUInt64BigEndian(h[24..]),
                VmStateSize = BinaryPrimitives.ReadUInt32BigEndian(h[32..]),
            };
            int idSize = BinaryPrimitives.ReadUInt16BigEndian(h[12..]);
            int nameSize = BinaryPrimitives.ReadUInt16BigEndian(h[14..]);
            uint extraSize = BinaryPrimitives.ReadUInt32BigEndian(h[36..]);
            if (extraSize > 1024)
                throw new Qcow2FormatException($"Too much extra metadata in snapshot table entry {i}\nYou can force-remove this extra metadata with qemu-img check -r all");
            pos += 40;
            if (pos + extraSize + idSize + nameSize > table.Length) throw new Qcow2FormatException("Snapshot table is truncated");
            s.ExtraData = table.Slice(pos, (int)extraSize).ToArray();
            if (extraSize >= 8) s.VmStateSize = BinaryPrimitives.ReadUInt64BigEndian(s.ExtraData);
            if (extraSize >= 16) s.DiskSize = BinaryPrimitives.ReadUInt64BigEndian(s.ExtraData.AsSpan(8));
            if (extraSize >= 24) s.Icount = BinaryPrimitives.ReadUInt64BigEndian(s.ExtraData.AsSpan(16));
            pos += (int)extraSize;
            s.Id = Encoding.UTF8.GetString(table.Slice(pos, idSize));
            pos += idSize;
            s.Name = Encoding.UTF8.GetString(table.Slice(pos, nameSize));
            pos += nameSize;
            pos = (pos + 7) & ~7;
            // A snapshot's L1 table is validated where it is used (QEMU lists a snapshot with a huge one).
            list.Add(s);
        }
        return list;
    }

    /// <summary>The on-disk size of the table holding <paramref name="snapshots"/>.</summary>
    public static int TableSize(IEnumerable<Qcow2Snapshot> snapshots) =>
        snapshots.Sum(s => (40 + s.ExtraData.Length + Encoding.UTF8.GetByteCount(s.Id) + Encoding.UTF8.GetByteCount(s.Name) + 7) & ~7);

    /// <summary>Serializes the table.</summary>
    public static byte[] SerializeTable(IReadOnlyList<Qcow2Snapshot> snapshots)
    {
        var buf = new byte[TableSize(snapshots)];
        int pos = 0;
        foreach (var s in snapshots)
        {
            var id = Encoding.UTF8.GetBytes(s.Id);
            var name = Encoding.UTF8.GetBytes(s.Name);
            var h = buf.AsSpan(pos);
            BinaryPrimitives.WriteUInt64BigEndian(h, s.L1TableOffset);
            BinaryPrimitives.WriteUInt32BigEndian(h[8..], s.L1Size);
            BinaryPrimitives.WriteUInt16BigEndian(h[12..], (ushort)id.Length);
            BinaryPrimitives.WriteUInt16BigEndian(h[14..], (ushort)name.Length);
            BinaryPrimitives.WriteUInt32BigEndian(h[16..], s.DateSeconds);
            BinaryPrimitives.WriteUInt32BigEndian(h[20..], s.DateNanoseconds);
            BinaryPrimitives.WriteUInt64BigEndian(h[24..], s.VmClockNanoseconds);
            BinaryPrimitives.WriteUInt32BigEndian(h[32..], (uint)Math.Min(s.VmStateSize, uint.MaxValue));
            BinaryPrimitives.WriteUInt32BigEndian(h[36..], (uint)s.ExtraData.Length);
            pos += 40;
            s.ExtraData.CopyTo(buf, pos);
            pos += s.ExtraData.Length;
            id.CopyTo(buf, pos);
            pos += id.Length;
            name.CopyTo(buf, pos);
            pos += name.Length;
            pos = (pos + 7) & ~7;
        }
        return buf;
    }
}
