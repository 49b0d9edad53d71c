using System.Buffers.Binary;
using System.Text;

namespace Vdisk.Drivers.Vdi;

/// <summary>The image types of a VDI header.</summary>
public enum VdiImageType : uint
{
    /// <summary>Blocks allocated on demand.</summary>
    Dynamic = 1,
    /// <summary>Every block allocated at creation.</summary>
    Static = 2,
}

/// <summary>
/// The 512-byte VirtualBox disk image header (little-endian) at offset 0, as QEMU's vdi driver
/// reads and writes it. Only version 1.1 with 512-byte sectors and 1 MiB blocks is opened.
/// </summary>
public sealed class VdiHeader
{
    /// <summary>Size of the header structure.</summary>
    public const int Size = 512;

    /// <summary>The signature at offset 0x40.</summary>
    public const uint Signature = 0xbeda107f;

    /// <summary>Version 1.1, the only one QEMU opens.</summary>
    public const uint Version1_1 = 0x00010001;

    /// <summary>The block (cluster) size QEMU opens and creates.</summary>
    public const uint DefaultBlockSize = 1 << 20;

    /// <summary>A block map entry for a never-allocated block.</summary>
    public const uint Unallocated = 0xffffffff;

    /// <summary>A block map entry for a discarded block (reads as zeroes).</summary>
    public const uint Discarded = 0xfffffffe;

    /// <summary>VDI_BLOCKS_IN_IMAGE_MAX: the block map must fit in an int after rounding to a sector.</summary>
    public const uint MaxBlocks = (uint)((int.MaxValue + 1u - 512) / 4);

    /// <summary>VDI_DISK_SIZE_MAX.</summary>
    public const ulong MaxDiskSize = (ulong)MaxBlocks * DefaultBlockSize;

    /// <summary>The text QEMU puts in the header of images it creates.</summary>
    public const string QemuText = "<<< QEMU VM Virtual Disk Image >>>\n";

    private readonly byte[] _bytes;

    private VdiHeader(byte[] bytes) => _bytes = bytes;

    /// <summary>Reads a header (no validation).</summary>
    public static VdiHeader Parse(ReadOnlySpan<byte> bytes) => new(bytes[..Size].ToArray());

    /// <summary>The header's bytes as stored.</summary>
    public byte[] ToArray() => (byte[])_bytes.Clone();

    private uint U32(int at) => BinaryPrimitives.ReadUInt32LittleEndian(_bytes.AsSpan(at));
    private void SetU32(int at, uint value) => BinaryPrimitives.WriteUInt32LittleEndian(_bytes.AsSpan(at), value);

    /// <summary>The signature field.</summary>
    public uint SignatureField => U32(0x40);
    /// <summary>The version field.</summary>
    public uint Version => U32(0x44);
    /// <summary>The image type (1 dynamic, 2 static).</summary>
    public uint ImageType => U32(0x4c);
    /// <summary>Offset of the block map.</summary>
    public uint OffsetBmap => U32(0x154);
    /// <summary>Offset of the first data block.</summary>
    public uint OffsetData => U32(0x158);
    /// <summary>Sector size.</summary>
    public uint SectorSize => U32(0x168);
    /// <summary>The virtual size (odd in some VBoxManage images until QEMU rewrites the header rounded).</summary>
    public ulong DiskSize
    {
        get => BinaryPrimitives.ReadUInt64LittleEndian(_bytes.AsSpan(0x170));
        set => BinaryPrimitives.WriteUInt64LittleEndian(_bytes.AsSpan(0x170), value);
    }
    /// <summary>Block size.</summary>
    public uint BlockSize => U32(0x178);
    /// <summary>Blocks in the image (block map entries).</summary>
    public uint BlocksInImage => U32(0x180);

    /// <summary>Blocks allocated so far (the next block goes at this index).</summary>
    public uint BlocksAllocated
    {
        get => U32(0x184);
        set => SetU32(0x184, value);
    }

    /// <summary>True when the link UUID is all zeroes.</summary>
    public bool LinkUuidIsNull => !_bytes.AsSpan(0x1a8, 16).ContainsAnyExcept((byte)0);
    /// <summary>True when the parent UUID is all zeroes.</summary>
    public bool ParentUuidIsNull => !_bytes.AsSpan(0x1b8, 16).ContainsAnyExcept((byte)0);

    /// <summary>The header vdi_co_do_create writes (block map at 0x200, data after it).</summary>
    public static VdiHeader Create(VdiImageType type, ulong diskSize, uint blocks, uint mapBytes, Guid image, Guid lastSnapshot)
    {
        var b = new byte[Size];
        Encoding.ASCII.GetBytes(QemuText).CopyTo(b, 0);
        var h = new VdiHeader(b);
        h.SetU32(0x40, Signature);
        h.SetU32(0x44, Version1_1);
        h.SetU32(0x48, 0x180);
        h.SetU32(0x4c, (uint)type);
        h.SetU32(0x154, 0x200);
        h.SetU32(0x158, 0x200 + mapBytes);
        h.SetU32(0x168, 512);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(0x170), diskSize);
        h.SetU32(0x178, DefaultBlockSize);
        h.SetU32(0x180, blocks);
        if (type == VdiImageType.Static) h.BlocksAllocated = blocks;
        // QEMU byte-swaps its RFC-order UUIDs into the little-endian GUID layout.
        image.TryWriteBytes(b.AsSpan(0x188, 16));
        lastSnapshot.TryWriteBytes(b.AsSpan(0x198, 16));
        return h;
    }

    /// <summary>
    /// vdi_open's checks, in its order: the first failure as QEMU words it, or null when QEMU
    /// opens the image. <paramref name="diskSize"/> is the size rounded up to a sector.
    /// </summary>
    public string? Problem(out ulong diskSize, out bool notSupported)
    {
        notSupported = true;
        diskSize = DiskSize;
        if (diskSize > MaxDiskSize)
            return $"Unsupported VDI image size (size is 0x{diskSize:x}, max supported is 0x{MaxDiskSize:x})";
        // 'VBoxManage convertfromraw' can write odd sizes; QEMU rounds them up to a sector.
        if (diskSize % 512 != 0) diskSize = (diskSize + 511) & ~511UL;
        if (SignatureField != Signature)
        {
            notSupported = false;
            return $"Image not in VDI format (bad signature {SignatureField:x8})";
        }
        if (Version != Version1_1) return $"unsupported VDI image (version {Version >> 16}.{Version & 0xffff})";
        if (OffsetBmap % 512 != 0) return $"unsupported VDI image (unaligned block map offset 0x{OffsetBmap:x})";
        if (OffsetData % 512 != 0) return $"unsupported VDI image (unaligned data offset 0x{OffsetData:x})";
        if (SectorSize != 512) return $"unsupported VDI image (sector size {SectorSize} is not 512)";
        if (BlockSize != DefaultBlockSize) return $"unsupported VDI image (block size {BlockSize} is not {DefaultBlockSize})";
        ulong room = (ulong)BlocksInImage * BlockSize;
        if (diskSize > room) return $"unsupported VDI image (disk size {diskSize}, image bitmap has room for {room})";
        if (!LinkUuidIsNull) return "unsupported VDI image (non-NULL link UUID)";
        if (!ParentUuidIsNull) return "unsupported VDI image (non-NULL parent UUID)";
        if (BlocksInImage > MaxBlocks) return $"unsupported VDI image (too many blocks {BlocksInImage}, max is {MaxBlocks})";
        return null;
    }

    /// <summary>vdi_probe: a whole header whose signature matches.</summary>
    public static bool Probe(ReadOnlySpan<byte> head) =>
        head.Length >= Size && BinaryPrimitives.ReadUInt32LittleEndian(head[0x40..]) == Signature;
}
