using System.Buffers.Binary;

namespace Vdisk.Drivers.Qcow2;

/// <summary>Feature bits of the qcow2 v3 header (docs/interop/qcow2.rst).</summary>
public static class Qcow2Features
{
    /// <summary>Incompatible bit 0: refcounts may be stale (lazy refcounts); repair before use.</summary>
    public const ulong IncompatDirty = 1UL << 0;
    /// <summary>Incompatible bit 1: metadata found inconsistent; no writes until repaired.</summary>
    public const ulong IncompatCorrupt = 1UL << 1;
    /// <summary>Incompatible bit 2: guest data lives in an external data file.</summary>
    public const ulong IncompatDataFile = 1UL << 2;
    /// <summary>Incompatible bit 3: the compression type field is not deflate.</summary>
    public const ulong IncompatCompression = 1UL << 3;
    /// <summary>Incompatible bit 4: 128-bit L2 entries with subclusters.</summary>
    public const ulong IncompatExtendedL2 = 1UL << 4;
    /// <summary>The incompatible bits QEMU 7.2 knows.</summary>
    public const ulong IncompatKnownToQemu = 0x1f;
    /// <summary>The incompatible bits vdisk can open.</summary>
    public const ulong IncompatSupported = IncompatDirty | IncompatCorrupt | IncompatDataFile | IncompatCompression;

    /// <summary>Compatible bit 0: lazy refcounts.</summary>
    public const ulong CompatLazyRefcounts = 1UL << 0;

    /// <summary>Autoclear bit 0: the bitmaps extension is consistent.</summary>
    public const ulong AutoclearBitmaps = 1UL << 0;
    /// <summary>Autoclear bit 1: the external data file is raw.</summary>
    public const ulong AutoclearDataFileRaw = 1UL << 1;
    /// <summary>The autoclear bits QEMU 7.2 knows (QCOW2_AUTOCLEAR_MASK); it clears the others on a read-write open.</summary>
    public const ulong AutoclearKnownToQemu = AutoclearBitmaps | AutoclearDataFileRaw;

    /// <summary>The feature-name table QEMU 7.2 writes, in its order: (type, bit, name).</summary>
    public static readonly (byte Type, byte Bit, string Name)[] NameTable =
    [
        (0, 0, "dirty bit"),
        (0, 1, "corrupt bit"),
        (0, 2, "external data file"),
        (0, 3, "compression type"),
        (0, 4, "extended L2 entries"),
        (1, 0, "lazy refcounts"),
        (2, 0, "bitmaps"),
        (2, 1, "raw external data"),
    ];
}

/// <summary>The compression types a qcow2 v3 header can name.</summary>
public enum Qcow2CompressionType : byte
{
    /// <summary>Raw deflate (QEMU calls it "zlib").</summary>
    Zlib = 0,
    /// <summary>Zstandard.</summary>
    Zstd = 1,
}

/// <summary>
/// The sizes that follow from cluster_bits and refcount_order: entries per table, index math,
/// and the compressed-entry bit split. Pure.
/// </summary>
public readonly record struct Qcow2Geometry
{
    /// <summary>Smallest cluster_bits QEMU accepts (512 bytes).</summary>
    public const int MinClusterBits = 9;
    /// <summary>Largest cluster_bits QEMU accepts (2 MiB).</summary>
    public const int MaxClusterBits = 21;
    /// <summary>QCOW_MAX_L1_SIZE: 32 MiB of L1 entries.</summary>
    public const long MaxL1Bytes = 32L << 20;
    /// <summary>QCOW_MAX_REFTABLE_SIZE: 8 MiB of refcount table.</summary>
    public const long MaxRefcountTableBytes = 8L << 20;

    /// <summary>Creates the geometry; the caller has validated the ranges.</summary>
    public Qcow2Geometry(int clusterBits, int refcountOrder)
    {
        ClusterBits = clusterBits;
        RefcountOrder = refcountOrder;
    }

    /// <summary>log2 of the cluster size.</summary>
    public int ClusterBits { get; }

    /// <summary>log2 of the refcount width in bits (0..6).</summary>
    public int RefcountOrder { get; }

    /// <summary>Bytes per cluster.</summary>
    public int ClusterSize => 1 << ClusterBits;

    /// <summary>log2 of the entries in one L2 table (8-byte entries).</summary>
    public int L2Bits => ClusterBits - 3;

    /// <summary>Entries in one L2 table.</summary>
    public int L2Entries => 1 << L2Bits;

    /// <summary>Refcount width in bits.</summary>
    public int RefcountBits => 1 << RefcountOrder;

    /// <summary>log2 of the entries in one refcount block.</summary>
    public int RefcountBlockBits => ClusterBits + 3 - RefcountOrder;

    /// <summary>Entries in one refcount block.</summary>
    public long RefcountBlockEntries => 1L << RefcountBlockBits;

    /// <summary>The largest refcount the width can hold.</summary>
    public ulong RefcountMax => RefcountOrder == 6 ? ulong.MaxValue : (1UL << RefcountBits) - 1;

    /// <summary>Bit where the sector count of a compressed L2 entry starts: 62 - (cluster_bits - 8).</summary>
    public int CompressedSizeShift => 62 - (ClusterBits - 8);

    /// <summary>Mask of the compressed entry's additional-sector count.</summary>
    public ulong CompressedSizeMask => (1UL << (ClusterBits - 8)) - 1;

    /// <summary>Mask of the compressed entry's host byte offset.</summary>
    public ulong CompressedOffsetMask => (1UL << CompressedSizeShift) - 1;

    /// <summary>Offset within its cluster.</summary>
    public long OffsetInCluster(long offset) => offset & (ClusterSize - 1);

    /// <summary>The cluster index of a byte offset.</summary>
    public long ClusterIndex(long offset) => offset >> ClusterBits;

    /// <summary>Start of the cluster containing <paramref name="offset"/>.</summary>
    public long ClusterStart(long offset) => offset & ~(long)(ClusterSize - 1);

    /// <summary>Clusters needed for <paramref name="bytes"/>.</summary>
    public long SizeToClusters(long bytes) => (bytes + ClusterSize - 1) >> ClusterBits;

    /// <summary>Index into the L1 table for a guest offset.</summary>
    public long L1Index(long guestOffset) => guestOffset >> (ClusterBits + L2Bits);

    /// <summary>Index into the L2 table for a guest offset.</summary>
    public int L2Index(long guestOffset) => (int)((guestOffset >> ClusterBits) & (L2Entries - 1));

    /// <summary>L1 entries needed for a virtual size (size_to_l1).</summary>
    public long L1EntriesFor(long virtualSize)
    {
        int shift = ClusterBits + L2Bits;
        return (virtualSize + (1L << shift) - 1) >> shift;
    }

    /// <summary>Bytes of guest data one L2 table maps.</summary>
    public long BytesPerL2Table => 1L << (ClusterBits + L2Bits);

    /// <summary>The refcount table index of a host cluster.</summary>
    public long RefcountTableIndex(long clusterIndex) => clusterIndex >> RefcountBlockBits;

    /// <summary>The index inside its refcount block of a host cluster.</summary>
    public int RefcountBlockIndex(long clusterIndex) => (int)(clusterIndex & (RefcountBlockEntries - 1));
}

/// <summary>How an L2 entry maps its guest cluster (QCow2ClusterType).</summary>
public enum Qcow2ClusterKind
{
    /// <summary>Not allocated: read the backing file, or zeroes.</summary>
    Unallocated,
    /// <summary>Reads as zeroes, no host cluster.</summary>
    ZeroPlain,
    /// <summary>Reads as zeroes, with a preallocated host cluster.</summary>
    ZeroAllocated,
    /// <summary>Data in a host cluster.</summary>
    Normal,
    /// <summary>Compressed data at a byte offset.</summary>
    Compressed,
}

/// <summary>One 64-bit standard L2 (or L1) entry and its decoding.</summary>
public readonly record struct L2Entry(ulong Raw)
{
    /// <summary>Bit 63: the refcount is exactly one, so the cluster may be written in place.</summary>
    public const ulong CopiedFlag = 1UL << 63;
    /// <summary>Bit 62: compressed cluster.</summary>
    public const ulong CompressedFlag = 1UL << 62;
    /// <summary>Bit 0: reads as zeroes (v3).</summary>
    public const ulong ZeroFlag = 1UL;
    /// <summary>Bits 9-55: host cluster offset (L2E_OFFSET_MASK; also L1E_OFFSET_MASK).</summary>
    public const ulong OffsetMask = 0x00fffffffffffe00UL;
    /// <summary>Bits that must be zero in a standard L2 entry (1-8, 56-61).</summary>
    public const ulong ReservedMask = 0x3f000000000001feUL;

    /// <summary>An entry pointing at a host cluster with refcount 1.</summary>
    public static L2Entry Allocated(long hostOffset) => new((ulong)hostOffset | CopiedFlag);

    /// <summary>A plain zero cluster.</summary>
    public static L2Entry ZeroPlain => new(ZeroFlag);

    /// <summary>A compressed entry: host byte offset and the number of 512-byte sectors touched.</summary>
    public static L2Entry CompressedAt(Qcow2Geometry g, long hostOffset, int compressedBytes)
    {
        long sectors = ((hostOffset + compressedBytes - 1) >> 9) - (hostOffset >> 9);
        return new(CompressedFlag | ((ulong)sectors << g.CompressedSizeShift) | (ulong)hostOffset);
    }

    /// <summary>True for an all-zero entry.</summary>
    public bool IsEmpty => Raw == 0;

    /// <summary>The COPIED bit.</summary>
    public bool IsCopied => (Raw & CopiedFlag) != 0;

    /// <summary>The host cluster offset of a standard entry.</summary>
    public long HostOffset => (long)(Raw & OffsetMask);

    /// <summary>qcow2_get_cluster_type for standard L2 entries of an image without an external data file.</summary>
    public Qcow2ClusterKind Kind => KindWith(externalDataFile: false);

    /// <summary>
    /// qcow2_get_cluster_type: offset 0 means unallocated, except in an external data file,
    /// where 0 is a valid offset and COPIED (always set there) tells a data cluster apart.
    /// </summary>
    public Qcow2ClusterKind KindWith(bool externalDataFile)
    {
        if ((Raw & CompressedFlag) != 0) return Qcow2ClusterKind.Compressed;
        if ((Raw & ZeroFlag) != 0) return HostOffset != 0 ? Qcow2ClusterKind.ZeroAllocated : Qcow2ClusterKind.ZeroPlain;
        if (HostOffset != 0 || (externalDataFile && IsCopied)) return Qcow2ClusterKind.Normal;
        return Qcow2ClusterKind.Unallocated;
    }

    /// <summary>Host byte offset of a compressed entry.</summary>
    public long CompressedHostOffset(Qcow2Geometry g) => (long)(Raw & g.CompressedOffsetMask);

    /// <summary>512-byte sectors a compressed entry occupies (the stored count plus one).</summary>
    public int CompressedSectors(Qcow2Geometry g) => (int)((Raw >> g.CompressedSizeShift) & g.CompressedSizeMask) + 1;

    /// <summary>
    /// The host byte range whose clusters a compressed entry references (and refcounts): from the
    /// sector holding its start, for its sector count.
    /// </summary>
    public (long Start, long Length) CompressedHostRange(Qcow2Geometry g) =>
        (CompressedHostOffset(g) & ~511L, (long)CompressedSectors(g) * 512);

    /// <inheritdoc />
    public override string ToString() => Raw.ToString("x16", System.Globalization.CultureInfo.InvariantCulture);
}

/// <summary>Reads and writes refcount entries of any width (1 to 64 bits) in a refcount block.</summary>
public static class RefcountCodec
{
    /// <summary>The refcount at <paramref name="index"/> of a block with 2^<paramref name="order"/>-bit entries.</summary>
    public static ulong Get(ReadOnlySpan<byte> block, long index, int order)
    {
        switch (order)
        {
            case 3: return block[(int)index];
            case 4: return BinaryPrimitives.ReadUInt16BigEndian(block[(int)(index * 2)..]);
            case 5: return BinaryPrimitives.ReadUInt32BigEndian(block[(int)(index * 4)..]);
            case 6: return BinaryPrimitives.ReadUInt64BigEndian(block[(int)(index * 8)..]);
            default:
                int bits = 1 << order;
                int perByte = 8 >> order;
                int shift = (int)(index % perByte) * bits;
                return (ulong)((block[(int)(index / perByte)] >> shift) & ((1 << bits) - 1));
        }
    }

    /// <summary>Sets the refcount at <paramref name="index"/>; the value must fit the width.</summary>
    public static void Set(Span<byte> block, long index, int order, ulong value)
    {
        switch (order)
        {
            case 3: block[(int)index] = (byte)value; return;
            case 4: BinaryPrimitives.WriteUInt16BigEndian(block[(int)(index * 2)..], (ushort)value); return;
            case 5: BinaryPrimitives.WriteUInt32BigEndian(block[(int)(index * 4)..], (uint)value); return;
            case 6: BinaryPrimitives.WriteUInt64BigEndian(block[(int)(index * 8)..], value); return;
            default:
                int bits = 1 << order;
                int perByte = 8 >> order;
                int shift = (int)(index % perByte) * bits;
                int mask = ((1 << bits) - 1) << shift;
                ref byte b = ref block[(int)(index / perByte)];
                b = (byte)((b & ~mask) | (((int)value << shift) & mask));
                return;
        }
    }
}

/// <summary>A qcow2 image's metadata is malformed: QEMU's wording, for "Could not open 'X': ...".</summary>
public sealed class Qcow2FormatException : IOException
{
    /// <summary>Creates the exception with the reason.</summary>
    public Qcow2FormatException(string message) : base(message) { }
}
