using System.Buffers.Binary;
using System.Text;

namespace Vdisk.Drivers.Vpc;

/// <summary>The disk types of a VHD footer.</summary>
public enum VpcDiskType : uint
{
    /// <summary>All data in place, footer at the end of the file.</summary>
    Fixed = 2,
    /// <summary>Blocks allocated on demand through the block allocation table.</summary>
    Dynamic = 3,
    /// <summary>Dynamic with a parent (QEMU reads these as plain dynamic disks).</summary>
    Differencing = 4,
}

/// <summary>
/// The 512-byte "Hard Disk Footer" of a VHD (big-endian), as QEMU's vpc driver reads and writes
/// it: a copy at offset 0 of dynamic disks, the only copy at the end of fixed ones.
/// </summary>
public sealed class VpcFooter
{
    /// <summary>Size of the footer.</summary>
    public const int Size = 512;

    /// <summary>The cookie every footer starts with.</summary>
    public static ReadOnlySpan<byte> Cookie => "conectix"u8;

    /// <summary>Seconds between the Unix epoch and the VHD epoch (2000-01-01 UTC).</summary>
    public const long TimestampBase = 946684800;

    private readonly byte[] _bytes;

    private VpcFooter(byte[] bytes) => _bytes = bytes;

    /// <summary>A copy of the 512 bytes as stored.</summary>
    public byte[] ToArray() => (byte[])_bytes.Clone();

    /// <summary>Reads a footer (no validation).</summary>
    public static VpcFooter Parse(ReadOnlySpan<byte> bytes) => new(bytes[..Size].ToArray());

    /// <summary>True when the bytes start with "conectix".</summary>
    public static bool HasCookie(ReadOnlySpan<byte> bytes) => bytes.Length >= 8 && bytes[..8].SequenceEqual(Cookie);

    /// <summary>Offset of the dynamic disk header (0xFFFFFFFFFFFFFFFF for fixed disks).</summary>
    public ulong DataOffset => BinaryPrimitives.ReadUInt64BigEndian(_bytes.AsSpan(16));

    /// <summary>The four-character creator application ("qemu", "qem2", "win ", "d2v "...).</summary>
    public ReadOnlySpan<byte> CreatorApp => _bytes.AsSpan(28, 4);

    /// <summary>The creator application as text.</summary>
    public string CreatorAppText => Encoding.Latin1.GetString(CreatorApp);

    /// <summary>The size the footer states, in bytes.</summary>
    public ulong CurrentSize => BinaryPrimitives.ReadUInt64BigEndian(_bytes.AsSpan(48));

    /// <summary>Cylinders of the CHS geometry.</summary>
    public int Cylinders => BinaryPrimitives.ReadUInt16BigEndian(_bytes.AsSpan(56));

    /// <summary>Heads of the CHS geometry.</summary>
    public int Heads => _bytes[58];

    /// <summary>Sectors per track of the CHS geometry.</summary>
    public int SectorsPerTrack => _bytes[59];

    /// <summary>The disk type field.</summary>
    public uint Type => BinaryPrimitives.ReadUInt32BigEndian(_bytes.AsSpan(60));

    /// <summary>The stored checksum.</summary>
    public uint Checksum => BinaryPrimitives.ReadUInt32BigEndian(_bytes.AsSpan(64));

    /// <summary>The checksum the footer should have (its own field counted as zero).</summary>
    public uint ComputedChecksum()
    {
        var copy = ToArray();
        BinaryPrimitives.WriteUInt32BigEndian(copy.AsSpan(64), 0);
        return VpcChecksum.Compute(copy);
    }

    /// <summary>Sectors of the CHS geometry (cylinders × heads × sectors).</summary>
    public long GeometrySectors => (long)Cylinders * Heads * SectorsPerTrack;

    /// <summary>
    /// The virtual size in sectors the way vpc_open decides it: the CHS geometry for Virtual PC
    /// and QEMU's own "qemu" images, the footer's current_size for Hyper-V, Disk2vhd, XenServer
    /// and QEMU's "qem2" (force_size) images, and for any image whose geometry is the maximum
    /// (the size could not be expressed in CHS). <paramref name="forceChs"/> and
    /// <paramref name="forceCurrentSize"/> are the <c>force_size_calc</c> overrides.
    /// </summary>
    public long VirtualSectors(bool forceChs, bool forceCurrentSize)
    {
        bool useChs = !(CreatorAppIs("win ") || CreatorAppIs("qem2") || CreatorAppIs("d2v ") || CreatorAppIs("CTXS") || CreatorApp.SequenceEqual("tap\0"u8))
            || forceChs;
        long sectors = GeometrySectors;
        if (!useChs || sectors == VpcGeometry.MaxGeometrySectors || forceCurrentSize)
            sectors = (long)(CurrentSize / 512);
        return sectors;
    }

    private bool CreatorAppIs(string app) => CreatorApp.SequenceEqual(Encoding.ASCII.GetBytes(app));

    /// <summary>Builds the footer vpc_co_create writes (checksum included).</summary>
    public static VpcFooter Create(VpcDiskType type, long totalSize, VpcGeometry geometry, bool forceSize, DateTimeOffset now, Guid uuid)
    {
        var b = new byte[Size];
        Cookie.CopyTo(b);
        Encoding.ASCII.GetBytes(forceSize ? "qem2" : "qemu").CopyTo(b, 28);
        Encoding.ASCII.GetBytes("Wi2k").CopyTo(b, 36);
        BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(8), 0x02);
        BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(12), 0x00010000);
        BinaryPrimitives.WriteUInt64BigEndian(b.AsSpan(16), type == VpcDiskType.Dynamic ? Size : ulong.MaxValue);
        BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(24), unchecked((uint)(now.ToUnixTimeSeconds() - TimestampBase)));
        // Virtual PC 2007's version, as QEMU writes it.
        BinaryPrimitives.WriteUInt16BigEndian(b.AsSpan(32), 5);
        BinaryPrimitives.WriteUInt16BigEndian(b.AsSpan(34), 3);
        BinaryPrimitives.WriteUInt64BigEndian(b.AsSpan(40), (ulong)totalSize);
        BinaryPrimitives.WriteUInt64BigEndian(b.AsSpan(48), (ulong)totalSize);
        BinaryPrimitives.WriteUInt16BigEndian(b.AsSpan(56), (ushort)geometry.Cylinders);
        b[58] = (byte)geometry.Heads;
        b[59] = (byte)geometry.SectorsPerTrack;
        BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(60), (uint)type);
        uuid.TryWriteBytes(b.AsSpan(68, 16), bigEndian: true, out _);
        BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(64), VpcChecksum.Compute(b));
        return new VpcFooter(b);
    }
}

/// <summary>
/// The 1024-byte dynamic disk header ("cxsparse") that the footer's data offset points to.
/// </summary>
public sealed class VpcDynamicHeader
{
    /// <summary>Size of the header.</summary>
    public const int Size = 1024;

    /// <summary>The header's cookie.</summary>
    public static ReadOnlySpan<byte> Cookie => "cxsparse"u8;

    private readonly byte[] _bytes;

    private VpcDynamicHeader(byte[] bytes) => _bytes = bytes;

    /// <summary>Reads a header (no validation).</summary>
    public static VpcDynamicHeader Parse(ReadOnlySpan<byte> bytes) => new(bytes[..Size].ToArray());

    /// <summary>The bytes as stored.</summary>
    public byte[] ToArray() => (byte[])_bytes.Clone();

    /// <summary>True when the cookie is "cxsparse".</summary>
    public bool HasCookie => _bytes.AsSpan(0, 8).SequenceEqual(Cookie);

    /// <summary>Offset of the block allocation table.</summary>
    public ulong TableOffset => BinaryPrimitives.ReadUInt64BigEndian(_bytes.AsSpan(16));

    /// <summary>Entries of the block allocation table (QEMU keeps it in a signed int).</summary>
    public int MaxTableEntries => BinaryPrimitives.ReadInt32BigEndian(_bytes.AsSpan(28));

    /// <summary>Bytes per block.</summary>
    public uint BlockSize => BinaryPrimitives.ReadUInt32BigEndian(_bytes.AsSpan(32));

    /// <summary>The header create_dynamic_disk writes: BAT at 1536, 2 MiB blocks.</summary>
    public static VpcDynamicHeader Create(int tableEntries, uint blockSize)
    {
        var b = new byte[Size];
        Cookie.CopyTo(b);
        // The spec says 0xFFFFFFFF, but Microsoft's tools expect all 64 bits set (QEMU's note).
        BinaryPrimitives.WriteUInt64BigEndian(b.AsSpan(8), ulong.MaxValue);
        BinaryPrimitives.WriteUInt64BigEndian(b.AsSpan(16), 3 * 512);
        BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(24), 0x00010000);
        BinaryPrimitives.WriteInt32BigEndian(b.AsSpan(28), tableEntries);
        BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(32), blockSize);
        BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(36), VpcChecksum.Compute(b));
        return new VpcDynamicHeader(b);
    }
}

/// <summary>vpc_checksum: the one's complement of the byte sum.</summary>
public static class VpcChecksum
{
    /// <summary>~(sum of all bytes).</summary>
    public static uint Compute(ReadOnlySpan<byte> bytes)
    {
        uint sum = 0;
        foreach (byte b in bytes) sum += b;
        return ~sum;
    }
}

/// <summary>A CHS geometry and the sizes QEMU derives from it.</summary>
/// <param name="Cylinders">Cylinders (up to 65535).</param>
/// <param name="Heads">Heads (up to 16; 255 in the footer field's range).</param>
/// <param name="SectorsPerTrack">Sectors per track (up to 255).</param>
public readonly record struct VpcGeometry(int Cylinders, int Heads, int SectorsPerTrack)
{
    /// <summary>65535 × 16 × 255: a geometry this large means "use current_size".</summary>
    public const long MaxGeometrySectors = 65535L * 16 * 255;

    /// <summary>VHD_MAX_SECTORS: 2040 GiB.</summary>
    public const long MaxSectors = 0xff000000;

    /// <summary>The geometry QEMU writes with force_size.</summary>
    public static VpcGeometry Max => new(65535, 16, 255);

    /// <summary>Sectors this geometry addresses.</summary>
    public long Sectors => (long)Cylinders * Heads * SectorsPerTrack;

    /// <summary>
    /// calculate_geometry: the VHD specification's algorithm (rounds down), with the heads
    /// limit raised to 16 above 127 GB as QEMU does.
    /// </summary>
    public static VpcGeometry FromSectors(long totalSectors)
    {
        totalSectors = Math.Min(totalSectors, MaxGeometrySectors);
        int secs, heads;
        uint cylsTimesHeads;
        if (totalSectors >= 65535L * 16 * 63)
        {
            secs = 255;
            heads = 16;
            cylsTimesHeads = (uint)(totalSectors / secs);
        }
        else
        {
            secs = 17;
            cylsTimesHeads = (uint)(totalSectors / secs);
            // uint8_t heads in QEMU: DIV_ROUND_UP(...) is truncated to a byte.
            heads = (byte)((cylsTimesHeads + 1023) / 1024);
            if (heads < 4) heads = 4;
            if (cylsTimesHeads >= (uint)(heads * 1024) || heads > 16)
            {
                secs = 31;
                heads = 16;
                cylsTimesHeads = (uint)(totalSectors / secs);
            }
            if (cylsTimesHeads >= (uint)(heads * 1024))
            {
                secs = 63;
                heads = 16;
                cylsTimesHeads = (uint)(totalSectors / secs);
            }
        }
        return new VpcGeometry((ushort)(cylsTimesHeads / (uint)heads), heads, secs);
    }
}
