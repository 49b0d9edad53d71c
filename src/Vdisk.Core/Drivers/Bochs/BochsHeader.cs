using System.Buffers.Binary;
using Vdisk.Native;

namespace Vdisk.Drivers.Bochs;

/// <summary>
/// The 512-byte header of a Bochs "growing" redolog image, as QEMU 7.2's block/bochs.c reads it
/// (all fields little-endian): magic, type and subtype strings, version, header size (where the
/// catalog starts), catalog entries, bitmap and extent sizes in bytes, and the disk size, whose
/// place depends on the version. The checks and their messages are bochs_open's, in its order;
/// the arithmetic is its 32-bit arithmetic, wrap-around included.
/// </summary>
public sealed record BochsHeader(uint Version, uint HeaderSize, uint CatalogEntries, uint BitmapSize, uint ExtentSize, ulong DiskSize)
{
    /// <summary>HEADER_SIZE.</summary>
    public const int Size = 512;

    /// <summary>HEADER_VERSION.</summary>
    public const uint Version2 = 0x00020000;

    /// <summary>HEADER_V1: the disk size sits where version 2 has a reserved word.</summary>
    public const uint Version1 = 0x00010000;

    /// <summary>A catalog entry for an extent that was never written.</summary>
    public const uint Unallocated = 0xffffffff;

    /// <summary>The largest catalog QEMU reads (what bximage needs for its largest image, about 8 TB).</summary>
    public const uint MaxCatalogEntries = 0x100000;

    /// <summary>The largest extent QEMU accepts.</summary>
    public const uint MaxExtentSize = 0x800000;

    /// <summary>bochs_probe: the magic, "Redolog", "Growing" and a known version.</summary>
    public static bool Probe(ReadOnlySpan<byte> head) =>
        head.Length >= Size && HasSignature(head);

    private static bool HasSignature(ReadOnlySpan<byte> head)
    {
        uint version = BinaryPrimitives.ReadUInt32LittleEndian(head[0x40..]);
        return IsCString(head, 0, "Bochs Virtual HD Image") && IsCString(head, 32, "Redolog") && IsCString(head, 48, "Growing")
            && version is Version2 or Version1;
    }

    /// <summary>strcmp(field, text) == 0: the text, then a NUL (which may lie past the field, as strcmp reads on).</summary>
    private static bool IsCString(ReadOnlySpan<byte> head, int at, string text)
    {
        for (int i = 0; i < text.Length; i++)
            if (head[at + i] != text[i]) return false;
        return head[at + text.Length] == 0;
    }

    /// <summary>
    /// The header in <paramref name="head"/>, or bochs_open's first refusal: not a Bochs image
    /// (EINVAL), or a catalog larger than QEMU reads (EFBIG).
    /// </summary>
    /// <exception cref="NativeIOException">The header is refused, with QEMU's message.</exception>
    public static BochsHeader Parse(ReadOnlySpan<byte> head, string filename)
    {
        if (head.Length < Size || !HasSignature(head))
            throw new NativeIOException(Errno.EINVAL, "Image not in Bochs format", filename);
        uint version = BinaryPrimitives.ReadUInt32LittleEndian(head[0x40..]);
        var header = new BochsHeader(
            version,
            BinaryPrimitives.ReadUInt32LittleEndian(head[0x44..]),
            BinaryPrimitives.ReadUInt32LittleEndian(head[0x48..]),
            BinaryPrimitives.ReadUInt32LittleEndian(head[0x4c..]),
            BinaryPrimitives.ReadUInt32LittleEndian(head[0x50..]),
            BinaryPrimitives.ReadUInt64LittleEndian(head[(version == Version1 ? 0x54 : 0x58)..]));
        if (header.CatalogEntries > MaxCatalogEntries)
            throw new NativeIOException(Errno.EFBIG, "Catalog size is too large", filename);
        return header;
    }

    /// <summary>bs->total_sectors: the disk size in whole sectors.</summary>
    public long TotalSectors => (long)(DiskSize / 512);

    /// <summary>Where extent data begins: right behind the catalog (32-bit, as QEMU's data_offset).</summary>
    public uint DataOffset => unchecked(HeaderSize + CatalogEntries * 4);

    /// <summary>Sectors of an extent's allocation bitmap (32-bit: a zero size wraps as in QEMU).</summary>
    public uint BitmapSectors => unchecked(1 + (BitmapSize - 1) / 512);

    /// <summary>Sectors of an extent's data.</summary>
    public uint ExtentSectors => unchecked(1 + (ExtentSize - 1) / 512);

    /// <summary>
    /// bochs_open's checks once the catalog is read: the extent size must be a power of two from
    /// 512 bytes to 8 MiB, and the catalog must cover the disk.
    /// </summary>
    /// <exception cref="NativeIOException">EINVAL with QEMU's message.</exception>
    public void Validate(string filename)
    {
        string? problem =
            ExtentSize < 512 ? "Extent size must be at least 512"
            : !uint.IsPow2(ExtentSize) ? $"Extent size {ExtentSize} is not a power of two"
            : ExtentSize > MaxExtentSize ? $"Extent size {ExtentSize} is too large"
            : CatalogEntries < (TotalSectors + ExtentSize / 512 - 1) / (ExtentSize / 512) ? "Catalog size is too small for this disk size"
            : null;
        if (problem is not null) throw new NativeIOException(Errno.EINVAL, problem, filename);
    }
}
