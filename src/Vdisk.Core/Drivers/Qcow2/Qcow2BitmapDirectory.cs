using System.Buffers.Binary;
using System.Text;

namespace Vdisk.Drivers.Qcow2;

/// <summary>One entry of the bitmap directory (docs/interop/qcow2.txt, "Bitmap directory").</summary>
/// <param name="TableOffset">Where the bitmap table starts (cluster aligned).</param>
/// <param name="TableSize">Entries of the bitmap table.</param>
/// <param name="Flags">in_use (bit 0), auto (bit 1).</param>
/// <param name="GranularityBits">log2 of the bytes of disk one bit covers.</param>
/// <param name="Name">The bitmap's name (UTF-8 on disk).</param>
public sealed record Qcow2BitmapEntry(ulong TableOffset, uint TableSize, uint Flags, int GranularityBits, string Name)
{
    /// <summary>Bitmap type 1, the only one defined: dirty tracking.</summary>
    public const byte DirtyTrackingType = 1;

    /// <summary>The bitmap was not stored by the writer that used it: its bits cannot be trusted.</summary>
    public bool InUse => (Flags & Qcow2BitmapDirectory.FlagInUse) != 0;

    /// <summary>The bitmap tracks writes (is enabled).</summary>
    public bool Auto => (Flags & Qcow2BitmapDirectory.FlagAuto) != 0;
}

/// <summary>
/// The bitmap directory of the bitmaps extension: parsing with qcow2-bitmap.c's checks and
/// messages (bitmap_list_load, check_dir_entry), serializing, and the size arithmetic of bitmaps
/// (check_constraints_on_bitmap, qcow2_get_persistent_dirty_bitmap_size).
/// </summary>
public static class Qcow2BitmapDirectory
{
    /// <summary>Flag bit 0: in use (not stored by its last writer).</summary>
    public const uint FlagInUse = 1u << 0;
    /// <summary>Flag bit 1: auto (enabled, tracks writes).</summary>
    public const uint FlagAuto = 1u << 1;
    private const uint ReservedFlags = 0xfffffffcu;
    /// <summary>BME_MAX_TABLE_SIZE.</summary>
    public const uint MaxTableSize = 0x8000000;
    /// <summary>BME_MAX_PHYS_SIZE: the most bitmap bytes QEMU keeps in memory for one bitmap.</summary>
    public const long MaxPhysicalSize = 0x20000000;
    /// <summary>BME_MAX_GRANULARITY_BITS.</summary>
    public const int MaxGranularityBits = 31;
    /// <summary>BME_MIN_GRANULARITY_BITS.</summary>
    public const int MinGranularityBits = 9;
    /// <summary>BME_MAX_NAME_SIZE.</summary>
    public const int MaxNameSize = 1023;
    /// <summary>QCOW2_MAX_BITMAPS.</summary>
    public const int MaxBitmaps = 65535;
    /// <summary>QCOW2_MAX_BITMAP_DIRECTORY_SIZE.</summary>
    public const long MaxDirectorySize = 1024L * MaxBitmaps;
    /// <summary>Table entry bits that must be zero.</summary>
    public const ulong TableEntryReservedMask = 0xff000000000001feUL;
    /// <summary>Table entry bits holding the cluster offset.</summary>
    public const ulong TableEntryOffsetMask = 0x00fffffffffffe00UL;
    /// <summary>Table entry with no offset: the cluster's bits are all ones.</summary>
    public const ulong TableEntryAllOnes = 1;

    /// <summary>calc_dir_entry_size: the 24-byte entry, extra data and name, padded to 8.</summary>
    public static long EntrySize(int nameBytes, long extraData = 0) => (24 + extraData + nameBytes + 7) & ~7L;

    /// <summary>get_bitmap_bytes_needed: bytes of bits for a disk of <paramref name="diskLength"/> bytes.</summary>
    public static long BitmapBytes(long diskLength, long granularity) => CeilDiv(CeilDiv(diskLength, granularity), 8);

    /// <summary>Entries of the bitmap table: clusters of bits.</summary>
    public static long TableEntries(long diskLength, long granularity, int clusterSize) => CeilDiv(BitmapBytes(diskLength, granularity), clusterSize);

    /// <summary>
    /// qcow2_get_persistent_dirty_bitmap_size: the bytes a qcow2 image with clusters of
    /// <paramref name="clusterSize"/> needs for these bitmaps, all bits assumed set: their
    /// clusters, their tables, and the directory.
    /// </summary>
    public static long MeasureBytes(IEnumerable<(string Name, long Granularity)> bitmaps, long diskLength, long clusterSize)
    {
        long total = 0, directory = 0;
        foreach (var (name, granularity) in bitmaps)
        {
            long clusters = CeilDiv(BitmapBytes(diskLength, granularity), clusterSize);
            total += clusters * clusterSize;
            total += CeilDiv(clusters * 8, clusterSize) * clusterSize;
            directory += EntrySize(Encoding.UTF8.GetByteCount(name));
        }
        return total + CeilDiv(directory, clusterSize) * clusterSize;
    }

    /// <summary>
    /// check_constraints_on_bitmap: null when a new bitmap of this granularity and name fits the
    /// format, else QEMU's reason.
    /// </summary>
    public static string? CheckNewBitmap(string name, long granularity, long diskLength, int clusterSize)
    {
        int bits = System.Numerics.BitOperations.TrailingZeroCount(granularity);
        if (bits > MaxGranularityBits) return $"Granularity exceeds maximum ({1UL << MaxGranularityBits} bytes)";
        if (bits < MinGranularityBits) return $"Granularity is under minimum ({1UL << MinGranularityBits} bytes)";
        long bytes = BitmapBytes(diskLength, granularity);
        if (bytes > MaxPhysicalSize || bytes > (long)MaxTableSize * clusterSize)
            return "Too much space will be occupied by the bitmap. Use larger granularity";
        if (Encoding.UTF8.GetByteCount(name) > MaxNameSize) return $"Name length exceeds maximum ({MaxNameSize} characters)";
        return null;
    }

    /// <summary>
    /// bitmap_list_load on the directory bytes: the entries, checked like check_dir_entry.
    /// </summary>
    /// <exception cref="Qcow2FormatException">QEMU's reason the directory cannot be used.</exception>
    public static List<Qcow2BitmapEntry> Parse(ReadOnlySpan<byte> dir, uint expectedCount, int clusterSize, long diskLength)
    {
        if (dir.Length == 0) throw new Qcow2FormatException("Requested bitmap directory size is zero");
        if (dir.Length > MaxDirectorySize) throw new Qcow2FormatException("Requested bitmap directory size is too big");
        var entries = new List<Qcow2BitmapEntry>();
        int pos = 0;
        while (pos < dir.Length)
        {
            if (pos + 24 > dir.Length) throw new Qcow2FormatException("Broken bitmap directory");
            if (entries.Count + 1 > expectedCount) throw new Qcow2FormatException("More bitmaps found than specified in header extension");
            var e = dir[pos..];
            ulong tableOffset = BinaryPrimitives.ReadUInt64BigEndian(e);
            uint tableSize = BinaryPrimitives.ReadUInt32BigEndian(e[8..]);
            uint flags = BinaryPrimitives.ReadUInt32BigEndian(e[12..]);
            byte type = e[16];
            int granularityBits = e[17];
            int nameSize = BinaryPrimitives.ReadUInt16BigEndian(e[18..]);
            uint extra = BinaryPrimitives.ReadUInt32BigEndian(e[20..]);
            long next = pos + EntrySize(nameSize, extra);
            if (next > dir.Length) throw new Qcow2FormatException("Broken bitmap directory");
            if (extra != 0) throw new Qcow2FormatException("Bitmap extra data is not supported");
            string name = Encoding.UTF8.GetString(e.Slice(24, nameSize));
            long physical = (long)tableSize * clusterSize;
            bool bad = tableSize == 0 || tableOffset == 0 || tableOffset % (ulong)clusterSize != 0 || tableSize > MaxTableSize
                || granularityBits > MaxGranularityBits || granularityBits < MinGranularityBits || (flags & ReservedFlags) != 0
                || nameSize > MaxNameSize || type != Qcow2BitmapEntry.DirtyTrackingType || physical > MaxPhysicalSize
                // A consistent bitmap must cover the disk; an in-use one may be stale from before a resize.
                || ((flags & FlagInUse) == 0 && diskLength > ((physical * 8) << granularityBits));
            if (bad) throw new Qcow2FormatException($"Bitmap '{name}' doesn't satisfy the constraints");
            entries.Add(new Qcow2BitmapEntry(tableOffset, tableSize, flags, granularityBits, name));
            pos = (int)next;
        }
        if (entries.Count != expectedCount) throw new Qcow2FormatException("Less bitmaps found than specified in header extension");
        return entries;
    }

    /// <summary>The directory bytes of <paramref name="entries"/> (bitmap_list_store's layout).</summary>
    public static byte[] Serialize(IReadOnlyList<Qcow2BitmapEntry> entries)
    {
        long size = entries.Sum(e => EntrySize(Encoding.UTF8.GetByteCount(e.Name)));
        var dir = new byte[size];
        int pos = 0;
        foreach (var entry in entries)
        {
            var name = Encoding.UTF8.GetBytes(entry.Name);
            var e = dir.AsSpan(pos);
            BinaryPrimitives.WriteUInt64BigEndian(e, entry.TableOffset);
            BinaryPrimitives.WriteUInt32BigEndian(e[8..], entry.TableSize);
            BinaryPrimitives.WriteUInt32BigEndian(e[12..], entry.Flags);
            e[16] = Qcow2BitmapEntry.DirtyTrackingType;
            e[17] = (byte)entry.GranularityBits;
            BinaryPrimitives.WriteUInt16BigEndian(e[18..], (ushort)name.Length);
            name.CopyTo(e[24..]);
            pos += (int)EntrySize(name.Length);
        }
        return dir;
    }

    /// <summary>The bitmaps extension body: count, reserved, directory size and offset.</summary>
    public static byte[] ExtensionData(uint count, ulong directorySize, ulong directoryOffset)
    {
        var data = new byte[24];
        BinaryPrimitives.WriteUInt32BigEndian(data, count);
        BinaryPrimitives.WriteUInt64BigEndian(data.AsSpan(8), directorySize);
        BinaryPrimitives.WriteUInt64BigEndian(data.AsSpan(16), directoryOffset);
        return data;
    }

    private static long CeilDiv(long a, long b) => (a + b - 1) / b;
}
