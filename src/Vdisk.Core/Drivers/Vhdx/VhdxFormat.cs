using System.Buffers.Binary;
using System.Numerics;
using System.Runtime.InteropServices;

namespace Vdisk.Drivers.Vhdx;

/// <summary>
/// The fixed layout of a VHDX file (MS-VHDX, as QEMU 7.2's block/vhdx.h has it): a 1 MiB header
/// section (file identifier, two headers, two region tables), then the log, the block allocation
/// table and the metadata region wherever the headers and region table say, then payload blocks.
/// All integers are little-endian; GUIDs are stored in the Microsoft layout .NET's
/// <see cref="Guid"/> reads and writes.
/// </summary>
public static class VhdxLayout
{
    /// <summary>Each structure of the header section takes 64 KiB.</summary>
    public const int HeaderBlockSize = 64 * 1024;
    /// <summary>Offset of header 1.</summary>
    public const long Header1Offset = HeaderBlockSize;
    /// <summary>Offset of header 2.</summary>
    public const long Header2Offset = 2 * HeaderBlockSize;
    /// <summary>Offset of the (first) region table.</summary>
    public const long RegionTableOffset = 3 * HeaderBlockSize;
    /// <summary>Offset of the second region table.</summary>
    public const long RegionTable2Offset = 4 * HeaderBlockSize;
    /// <summary>End of the header section.</summary>
    public const long HeaderSectionEnd = 1 << 20;
    /// <summary>The checksum of a header covers its first 4 KiB.</summary>
    public const int HeaderChecksumSize = 4096;

    /// <summary>"vhdxfile", the file identifier's signature.</summary>
    public static ReadOnlySpan<byte> FileSignature => "vhdxfile"u8;

    /// <summary>Block sizes QEMU opens and creates: 1 MiB to 256 MiB.</summary>
    public const long MinBlockSize = 1 << 20;
    /// <summary>The largest block size.</summary>
    public const long MaxBlockSize = 256 << 20;
    /// <summary>VHDX_MAX_SECTORS_PER_BLOCK: sectors one sector-bitmap block describes.</summary>
    public const long MaxSectorsPerBlock = 1 << 23;
    /// <summary>The largest virtual size (64 TiB).</summary>
    public const long MaxImageSize = 64L << 40;

    /// <summary>Region table entry of the block allocation table.</summary>
    public static readonly Guid BatGuid = new("2dc27766-f623-4200-9d64-115e9bfd4a08");
    /// <summary>Region table entry of the metadata region.</summary>
    public static readonly Guid MetadataGuid = new("8b7ca206-4790-4b9a-b8fe-575f050f886e");
    /// <summary>Metadata item: file parameters (block size, flags).</summary>
    public static readonly Guid FileParametersGuid = new("caa16737-fa36-4d43-b3b6-33f0aa44e76b");
    /// <summary>Metadata item: virtual disk size.</summary>
    public static readonly Guid VirtualSizeGuid = new("2fa54224-cd1b-4876-b211-5dbed83bf4b8");
    /// <summary>Metadata item: SCSI page 83 identifier.</summary>
    public static readonly Guid Page83Guid = new("beca12ab-b2e6-4523-93ef-c309e000c746");
    /// <summary>Metadata item: logical sector size.</summary>
    public static readonly Guid LogicalSectorGuid = new("8141bf1d-a96f-4709-ba47-f233a8faab5f");
    /// <summary>Metadata item: physical sector size.</summary>
    public static readonly Guid PhysicalSectorGuid = new("cda348c7-445d-4471-9cc9-e9885251c556");
    /// <summary>Metadata item: parent locator (differencing disks, which QEMU 7.2 does not open).</summary>
    public static readonly Guid ParentLocatorGuid = new("a8d35f2d-b30b-454d-abf7-d3d84834ab0c");

    /// <summary>
    /// The number of BAT entries (payload blocks plus interleaved sector-bitmap entries) of a disk,
    /// computed as vhdx_calc_bat_entries does, in 32-bit arithmetic: a disk of size 0 wraps
    /// around and gets a large table.
    /// </summary>
    public static uint BatEntries(ulong virtualSize, uint blockSize, out int chunkRatioBits)
    {
        ulong chunkRatio = (ulong)MaxSectorsPerBlock * 512 / blockSize;
        chunkRatioBits = BitOperations.TrailingZeroCount(chunkRatio);
        uint dataBlocks = unchecked((uint)((virtualSize + blockSize - 1) / blockSize));
        return unchecked(dataBlocks + ((dataBlocks - 1) >> chunkRatioBits));
    }
}

/// <summary>The states of a payload block in the BAT (low three bits of an entry).</summary>
public enum VhdxBlockState
{
    /// <summary>Never written: reads as zeroes in QEMU (undefined per spec).</summary>
    NotPresent = 0,
    /// <summary>Undefined content: reads as zeroes in QEMU.</summary>
    Undefined = 1,
    /// <summary>Reads as zeroes.</summary>
    Zero = 2,
    /// <summary>Unmapped (trimmed): reads as zeroes in QEMU.</summary>
    Unmapped = 3,
    /// <summary>Unmapped as spec v0.95 numbered it: reads as zeroes in QEMU.</summary>
    UnmappedV095 = 5,
    /// <summary>The whole block is in the file at the entry's offset.</summary>
    FullyPresent = 6,
    /// <summary>Differencing disks only: the sector bitmap says which sectors are here (QEMU fails reads with EIO).</summary>
    PartiallyPresent = 7,
}

/// <summary>A BAT entry: file offset in the upper 44 bits (1 MiB units), state in the low three.</summary>
public static class VhdxBat
{
    /// <summary>The offset bits.</summary>
    public const ulong OffsetMask = 0xFFFFFFFFFFF00000UL;

    /// <summary>The state bits.</summary>
    public const ulong StateMask = 0x7;

    /// <summary>The state of an entry.</summary>
    public static VhdxBlockState State(ulong entry) => (VhdxBlockState)(int)(entry & StateMask);

    /// <summary>The file offset of an entry.</summary>
    public static ulong Offset(ulong entry) => entry & OffsetMask;

    /// <summary>
    /// vhdx_update_bat_table_entry: zero, undefined, not-present and unmapped entries carry no
    /// offset (Hyper-V refuses a non-zero one), other states keep <paramref name="fileOffset"/>.
    /// </summary>
    public static ulong Make(VhdxBlockState state, ulong fileOffset) =>
        (state is VhdxBlockState.Zero or VhdxBlockState.Undefined or VhdxBlockState.NotPresent or VhdxBlockState.Unmapped ? 0 : fileOffset)
        | ((ulong)state & StateMask);
}

/// <summary>
/// One of the two 4 KiB VHDX headers (80 bytes of fields, checksum over 4 KiB). The one with the
/// higher sequence number among the valid ones is current; every update writes the other one.
/// </summary>
public sealed class VhdxHeader
{
    /// <summary>Bytes of fields.</summary>
    public const int FieldsSize = 80;

    /// <summary>"head".</summary>
    public const uint SignatureValue = 0x64616568;

    /// <summary>The fields as last read or set.</summary>
    public byte[] Fields { get; }

    private VhdxHeader(byte[] fields) => Fields = fields;

    /// <summary>The first 80 bytes of <paramref name="block"/>.</summary>
    public static VhdxHeader Parse(ReadOnlySpan<byte> block) => new(block[..FieldsSize].ToArray());

    /// <summary>An empty header.</summary>
    public static VhdxHeader Empty() => new(new byte[FieldsSize]);

    /// <summary>A copy.</summary>
    public VhdxHeader Clone() => new((byte[])Fields.Clone());

    /// <summary>The signature field.</summary>
    public uint Signature
    {
        get => BinaryPrimitives.ReadUInt32LittleEndian(Fields);
        set => BinaryPrimitives.WriteUInt32LittleEndian(Fields, value);
    }

    /// <summary>The sequence number.</summary>
    public ulong SequenceNumber
    {
        get => BinaryPrimitives.ReadUInt64LittleEndian(Fields.AsSpan(8));
        set => BinaryPrimitives.WriteUInt64LittleEndian(Fields.AsSpan(8), value);
    }

    /// <summary>Changed before the first write to the file in a session.</summary>
    public Guid FileWriteGuid
    {
        get => new(Fields.AsSpan(16, 16));
        set => value.TryWriteBytes(Fields.AsSpan(16, 16));
    }

    /// <summary>Changed before the first guest-visible write in a session.</summary>
    public Guid DataWriteGuid
    {
        get => new(Fields.AsSpan(32, 16));
        set => value.TryWriteBytes(Fields.AsSpan(32, 16));
    }

    /// <summary>Non-zero while the log holds entries to replay; entries must carry it.</summary>
    public Guid LogGuid
    {
        get => new(Fields.AsSpan(48, 16));
        set => value.TryWriteBytes(Fields.AsSpan(48, 16));
    }

    /// <summary>The log format version (0).</summary>
    public ushort LogVersion
    {
        get => BinaryPrimitives.ReadUInt16LittleEndian(Fields.AsSpan(64));
        set => BinaryPrimitives.WriteUInt16LittleEndian(Fields.AsSpan(64), value);
    }

    /// <summary>The file format version (1).</summary>
    public ushort Version
    {
        get => BinaryPrimitives.ReadUInt16LittleEndian(Fields.AsSpan(66));
        set => BinaryPrimitives.WriteUInt16LittleEndian(Fields.AsSpan(66), value);
    }

    /// <summary>Length of the log (a multiple of 1 MiB).</summary>
    public uint LogLength
    {
        get => BinaryPrimitives.ReadUInt32LittleEndian(Fields.AsSpan(68));
        set => BinaryPrimitives.WriteUInt32LittleEndian(Fields.AsSpan(68), value);
    }

    /// <summary>Offset of the log (a multiple of 1 MiB).</summary>
    public ulong LogOffset
    {
        get => BinaryPrimitives.ReadUInt64LittleEndian(Fields.AsSpan(72));
        set => BinaryPrimitives.WriteUInt64LittleEndian(Fields.AsSpan(72), value);
    }

    /// <summary>
    /// The 4 KiB block to store: <paramref name="existing"/> (the reserved bytes as on disk, or
    /// zeroes) with these fields over it and the checksum over the whole block.
    /// </summary>
    public byte[] ToBlock(ReadOnlySpan<byte> existing)
    {
        var block = new byte[VhdxLayout.HeaderChecksumSize];
        existing[..Math.Min(existing.Length, block.Length)].CopyTo(block);
        Fields.CopyTo(block, 0);
        Crc32C.Store(block, 4);
        return block;
    }
}

/// <summary>
/// CRC-32C (Castagnoli) as VHDX uses it: initial value and final xor 0xFFFFFFFF, stored
/// little-endian in a field that counts as zero while the sum is taken.
/// </summary>
public static class Crc32C
{
    /// <summary>Continues a running (not yet inverted) CRC over <paramref name="data"/>.</summary>
    public static uint Append(uint crc, ReadOnlySpan<byte> data)
    {
        var words = MemoryMarshal.Cast<byte, ulong>(data);
        foreach (ulong w in words) crc = BitOperations.Crc32C(crc, BitConverter.IsLittleEndian ? w : BinaryPrimitives.ReverseEndianness(w));
        foreach (byte b in data[(words.Length * 8)..]) crc = BitOperations.Crc32C(crc, b);
        return crc;
    }

    /// <summary>The CRC-32C of <paramref name="data"/>.</summary>
    public static uint Compute(ReadOnlySpan<byte> data) => ~Append(0xFFFFFFFF, data);

    /// <summary>The CRC of <paramref name="data"/> with its 4-byte field at <paramref name="fieldOffset"/> counted as zero.</summary>
    public static uint ComputeWithField(ReadOnlySpan<byte> data, int fieldOffset)
    {
        uint crc = Append(0xFFFFFFFF, data[..fieldOffset]);
        crc = Append(crc, [0, 0, 0, 0]);
        return ~Append(crc, data[(fieldOffset + 4)..]);
    }

    /// <summary>True when the field at <paramref name="fieldOffset"/> holds the CRC of the rest.</summary>
    public static bool IsValid(ReadOnlySpan<byte> data, int fieldOffset) =>
        BinaryPrimitives.ReadUInt32LittleEndian(data[fieldOffset..]) == ComputeWithField(data, fieldOffset);

    /// <summary>Computes the CRC and stores it in its field.</summary>
    public static void Store(Span<byte> data, int fieldOffset) =>
        BinaryPrimitives.WriteUInt32LittleEndian(data[fieldOffset..], ComputeWithField(data, fieldOffset));
}

/// <summary>An entry of the region table: where a region lives and whether a reader must know it.</summary>
/// <param name="Guid">The region's identifier.</param>
/// <param name="FileOffset">Its offset in the file.</param>
/// <param name="Length">Its length.</param>
/// <param name="Required">The "required" flag: an unknown required region makes the file unreadable.</param>
public readonly record struct VhdxRegion(Guid Guid, ulong FileOffset, uint Length, bool Required)
{
    /// <summary>The 32 bytes of the entry.</summary>
    public void Write(Span<byte> to)
    {
        Guid.TryWriteBytes(to[..16]);
        BinaryPrimitives.WriteUInt64LittleEndian(to[16..], FileOffset);
        BinaryPrimitives.WriteUInt32LittleEndian(to[24..], Length);
        BinaryPrimitives.WriteUInt32LittleEndian(to[28..], Required ? 1u : 0u);
    }

    /// <summary>Reads a 32-byte entry.</summary>
    public static VhdxRegion Read(ReadOnlySpan<byte> from) => new(new Guid(from[..16]),
        BinaryPrimitives.ReadUInt64LittleEndian(from[16..]), BinaryPrimitives.ReadUInt32LittleEndian(from[24..]),
        (BinaryPrimitives.ReadUInt32LittleEndian(from[28..]) & 1) != 0);
}

/// <summary>An entry of the metadata table.</summary>
/// <param name="ItemId">The item's identifier.</param>
/// <param name="Offset">Offset of the item from the start of the metadata region.</param>
/// <param name="Length">Length of the item.</param>
/// <param name="Flags">IsUser (1), IsVirtualDisk (2), IsRequired (4).</param>
public readonly record struct VhdxMetadataEntry(Guid ItemId, uint Offset, uint Length, uint Flags)
{
    /// <summary>IsRequired: a reader must understand the item.</summary>
    public const uint IsRequired = 4;
    /// <summary>IsVirtualDisk: the item describes the virtual disk, not the file.</summary>
    public const uint IsVirtualDisk = 2;

    /// <summary>The 32 bytes of the entry.</summary>
    public void Write(Span<byte> to)
    {
        ItemId.TryWriteBytes(to[..16]);
        BinaryPrimitives.WriteUInt32LittleEndian(to[16..], Offset);
        BinaryPrimitives.WriteUInt32LittleEndian(to[20..], Length);
        BinaryPrimitives.WriteUInt32LittleEndian(to[24..], Flags);
    }

    /// <summary>Reads a 32-byte entry.</summary>
    public static VhdxMetadataEntry Read(ReadOnlySpan<byte> from) => new(new Guid(from[..16]),
        BinaryPrimitives.ReadUInt32LittleEndian(from[16..]), BinaryPrimitives.ReadUInt32LittleEndian(from[20..]),
        BinaryPrimitives.ReadUInt32LittleEndian(from[24..]));
}
