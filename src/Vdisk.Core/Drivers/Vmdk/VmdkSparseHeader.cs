using System.Buffers.Binary;

namespace Vdisk.Drivers.Vmdk;

/// <summary>
/// The header of a hosted sparse extent (VMDK4, magic "KDMV", little-endian fields), as in
/// VMware's Virtual Disk Format 5.0 and QEMU's VMDK4Header. Offsets and sizes are in sectors.
/// </summary>
public sealed class VmdkSparseHeader
{
    /// <summary>"COWD": the ESX sparse extent (VMFSSPARSE, QEMU's VMDK3Header).</summary>
    public const uint Vmdk3Magic = ('C' << 24) | ('O' << 16) | ('W' << 8) | 'D';

    /// <summary>"KDMV": the hosted sparse extent.</summary>
    public const uint Vmdk4Magic = ('K' << 24) | ('D' << 16) | ('M' << 8) | 'V';

    /// <summary>Valid newline-detection test (the check bytes are meaningful).</summary>
    public const uint FlagNewlineDetect = 1 << 0;
    /// <summary>A redundant (backup) grain directory is kept.</summary>
    public const uint FlagRedundantGrainDirectory = 1 << 1;
    /// <summary>A grain table entry of 1 means the grain reads as zeroes.</summary>
    public const uint FlagZeroGrain = 1 << 2;
    /// <summary>Grains are compressed.</summary>
    public const uint FlagCompressed = 1 << 16;
    /// <summary>Metadata and grains are preceded by markers (stream-optimized).</summary>
    public const uint FlagMarkers = 1 << 17;

    /// <summary>compressAlgorithm: deflate (zlib format).</summary>
    public const ushort CompressionDeflate = 1;

    /// <summary>gd_offset of a stream whose grain directory is in the footer.</summary>
    public const ulong GrainDirectoryAtEnd = ulong.MaxValue;

    /// <summary>The header is the first 512 bytes: magic (4) and 75 bytes of fields, padded.</summary>
    public const int Size = 512;

    /// <summary>Format version (1, 2 with zeroed grains, 3 for streamOptimized or changed block tracking).</summary>
    public uint Version { get; set; }
    /// <summary>The flag bits above.</summary>
    public uint Flags { get; set; }
    /// <summary>Extent size in sectors.</summary>
    public ulong Capacity { get; set; }
    /// <summary>Grain size in sectors.</summary>
    public ulong Granularity { get; set; }
    /// <summary>Embedded descriptor (sectors from the start of the file; 0 if none).</summary>
    public ulong DescriptorOffset { get; set; }
    /// <summary>Embedded descriptor size in sectors.</summary>
    public ulong DescriptorSize { get; set; }
    /// <summary>Grain table entries per grain table.</summary>
    public uint GrainTableEntries { get; set; }
    /// <summary>The redundant grain directory.</summary>
    public ulong RedundantGrainDirectoryOffset { get; set; }
    /// <summary>The grain directory (or <see cref="GrainDirectoryAtEnd"/>).</summary>
    public ulong GrainDirectoryOffset { get; set; }
    /// <summary>Where grains start (metadata ends).</summary>
    public ulong GrainOffset { get; set; }
    /// <summary>The newline-detection bytes "\n \r\n".</summary>
    public byte[] CheckBytes { get; set; } = [0x0a, 0x20, 0x0d, 0x0a];
    /// <summary>0 none, 1 deflate.</summary>
    public ushort CompressAlgorithm { get; set; }

    /// <summary>True when grains are deflate-compressed (QEMU looks only at compressAlgorithm).</summary>
    public bool IsCompressed => CompressAlgorithm == CompressionDeflate;

    /// <summary>Reads the fields after the magic (<paramref name="sector"/> starts with it).</summary>
    public static VmdkSparseHeader Parse(ReadOnlySpan<byte> sector) => new()
    {
        Version = BinaryPrimitives.ReadUInt32LittleEndian(sector[4..]),
        Flags = BinaryPrimitives.ReadUInt32LittleEndian(sector[8..]),
        Capacity = BinaryPrimitives.ReadUInt64LittleEndian(sector[12..]),
        Granularity = BinaryPrimitives.ReadUInt64LittleEndian(sector[20..]),
        DescriptorOffset = BinaryPrimitives.ReadUInt64LittleEndian(sector[28..]),
        DescriptorSize = BinaryPrimitives.ReadUInt64LittleEndian(sector[36..]),
        GrainTableEntries = BinaryPrimitives.ReadUInt32LittleEndian(sector[44..]),
        RedundantGrainDirectoryOffset = BinaryPrimitives.ReadUInt64LittleEndian(sector[48..]),
        GrainDirectoryOffset = BinaryPrimitives.ReadUInt64LittleEndian(sector[56..]),
        GrainOffset = BinaryPrimitives.ReadUInt64LittleEndian(sector[64..]),
        CheckBytes = sector.Slice(73, 4).ToArray(),
        CompressAlgorithm = BinaryPrimitives.ReadUInt16LittleEndian(sector[77..]),
    };

    /// <summary>The 512-byte header sector with the magic.</summary>
    public byte[] Serialize()
    {
        var b = new byte[Size];
        BinaryPrimitives.WriteUInt32BigEndian(b, Vmdk4Magic);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(4), Version);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(8), Flags);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(12), Capacity);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(20), Granularity);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(28), DescriptorOffset);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(36), DescriptorSize);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(44), GrainTableEntries);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(48), RedundantGrainDirectoryOffset);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(56), GrainDirectoryOffset);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(64), GrainOffset);
        CheckBytes.AsSpan(0, 4).CopyTo(b.AsSpan(73));
        BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(77), CompressAlgorithm);
        return b;
    }

    /// <summary>
    /// The layout QEMU's vmdk_init_extent gives a new sparse extent of <paramref name="bytes"/>:
    /// 64 KiB grains, 512-entry grain tables, the embedded descriptor in sectors 1-20, the
    /// redundant directory and its tables, then the directory and its tables, grains after.
    /// </summary>
    public static VmdkSparseHeader ForNewExtent(long bytes, bool compressed, bool zeroedGrain)
    {
        var h = new VmdkSparseHeader
        {
            Version = compressed ? 3u : zeroedGrain ? 2u : 1u,
            Flags = FlagRedundantGrainDirectory | FlagNewlineDetect
                | (compressed ? FlagCompressed | FlagMarkers : 0)
                | (zeroedGrain ? FlagZeroGrain : 0),
            CompressAlgorithm = compressed ? CompressionDeflate : (ushort)0,
            Capacity = (ulong)(bytes / 512),
            Granularity = 128,
            GrainTableEntries = 512,
            DescriptorOffset = 1,
            DescriptorSize = 20,
        };
        var l = h.NewLayout();
        h.RedundantGrainDirectoryOffset = h.DescriptorOffset + h.DescriptorSize;
        h.GrainDirectoryOffset = h.RedundantGrainDirectoryOffset + l.DirectorySectors + l.TableSectors * l.TableCount;
        ulong metadataEnd = h.GrainDirectoryOffset + l.DirectorySectors + l.TableSectors * l.TableCount;
        h.GrainOffset = (metadataEnd + h.Granularity - 1) / h.Granularity * h.Granularity;
        return h;
    }

    /// <summary>Sizes of a new extent's metadata, as vmdk_init_extent computes them.</summary>
    /// <param name="TableSectors">Sectors per grain table.</param>
    /// <param name="TableCount">Grain tables (one per directory entry).</param>
    /// <param name="DirectorySectors">Sectors of one grain directory.</param>
    public readonly record struct Layout(ulong TableSectors, ulong TableCount, ulong DirectorySectors);

    /// <summary>The metadata sizes of this header's geometry for a new extent.</summary>
    public Layout NewLayout()
    {
        ulong grains = (Capacity + Granularity - 1) / Granularity;
        ulong tableSectors = (GrainTableEntries * 4UL + 511) / 512;
        ulong tableCount = (grains + GrainTableEntries - 1) / GrainTableEntries;
        ulong directorySectors = (tableCount * 4 + 511) / 512;
        return new Layout(tableSectors, tableCount, directorySectors);
    }
}

/// <summary>The ESX sparse header (COWD, QEMU's VMDK3Header): fields after the magic, little-endian.</summary>
/// <param name="Version">Format version.</param>
/// <param name="Flags">Flags.</param>
/// <param name="DiskSectors">Extent size in sectors.</param>
/// <param name="Granularity">Grain size in sectors.</param>
/// <param name="DirectoryOffset">Grain directory, in sectors.</param>
/// <param name="DirectorySize">Grain directory entries.</param>
public sealed record VmdkCowdHeader(uint Version, uint Flags, uint DiskSectors, uint Granularity, uint DirectoryOffset, uint DirectorySize)
{
    /// <summary>COWD grain tables always have 4096 entries.</summary>
    public const int GrainTableEntries = 4096;

    /// <summary>Reads the header; <paramref name="sector"/> starts with the magic.</summary>
    public static VmdkCowdHeader Parse(ReadOnlySpan<byte> sector) => new(
        BinaryPrimitives.ReadUInt32LittleEndian(sector[4..]),
        BinaryPrimitives.ReadUInt32LittleEndian(sector[8..]),
        BinaryPrimitives.ReadUInt32LittleEndian(sector[12..]),
        BinaryPrimitives.ReadUInt32LittleEndian(sector[16..]),
        BinaryPrimitives.ReadUInt32LittleEndian(sector[20..]),
        BinaryPrimitives.ReadUInt32LittleEndian(sector[24..]));
}

/// <summary>
/// The markers of a stream-optimized extent: a grain marker is the guest sector (u64) and the
/// compressed size (u32) followed by the data; a metadata marker has size 0 and a type.
/// </summary>
public static class VmdkMarker
{
    /// <summary>End of stream.</summary>
    public const uint EndOfStream = 0;
    /// <summary>A grain table follows.</summary>
    public const uint GrainTable = 1;
    /// <summary>The grain directory follows.</summary>
    public const uint GrainDirectory = 2;
    /// <summary>The footer (a copy of the header with the real directory offset) follows.</summary>
    public const uint Footer = 3;

    /// <summary>Bytes before a grain's compressed data.</summary>
    public const int GrainHeaderSize = 12;
}
