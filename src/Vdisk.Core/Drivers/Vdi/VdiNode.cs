using System.Buffers.Binary;
using Vdisk.Graph;
using Vdisk.Native;
using Vdisk.Permissions;

namespace Vdisk.Drivers.Vdi;

/// <summary>
/// The <c>vdi</c> format (VirtualBox), as QEMU 7.2's block/vdi.c: a block map of 1 MiB blocks
/// kept in memory; a write to an unallocated block appends the whole block (the write's data
/// with zeroes around it) at index blocks_allocated, then rewrites the header and the changed
/// sectors of the block map. Unallocated and discarded blocks read as zeroes.
/// </summary>
public sealed class VdiNode : BlockNode, IImageInfoSource
{
    private readonly BdrvChild _fileChild;
    private readonly VdiHeader _header;
    private readonly uint[] _bmap;
    private readonly long _length;
    private readonly SemaphoreSlim _allocation = new(1, 1);

    private VdiNode(string nodeName, NodeFlags flags, BlockNode file, VdiHeader header, uint[] bmap, long length)
        : base(nodeName, flags, file.Filename)
    {
        _header = header;
        _bmap = bmap;
        _length = length;
        _fileChild = AttachChild("file", file, ChildRole.Image);
    }

    /// <inheritdoc />
    public override string DriverName => "vdi";

    /// <inheritdoc />
    public override bool IsProtocol => false;

    /// <inheritdoc />
    public override IChildPermissionRule PermissionRule => DefaultChildPermissionRule.Instance;

    /// <summary>The file child's node.</summary>
    public BlockNode File => _fileChild.Node;

    /// <summary>The header (blocks_allocated as updated since the open).</summary>
    public VdiHeader Header => _header;

    /// <summary>Block size (always 1 MiB: QEMU opens nothing else).</summary>
    public long BlockSize => _header.BlockSize;

    /// <inheritdoc />
    public override long Length => _length;

    /// <summary>True for an entry that points at a block (not unallocated, not discarded).</summary>
    public static bool IsAllocated(uint entry) => entry < VdiHeader.Discarded;

    /// <summary>Opens the image on <paramref name="file"/> with vdi_open's checks and messages.</summary>
    public static async Task<VdiNode> OpenAsync(string nodeName, NodeFlags flags, BlockNode file, CancellationToken ct = default)
    {
        var bytes = new byte[VdiHeader.Size];
        try
        {
            await FormatIo.ReadAsync(file, 0, bytes, ct).ConfigureAwait(false);
        }
        catch (NativeIOException e)
        {
            throw FormatIo.OpenError(file, e.Errno);
        }
        var header = VdiHeader.Parse(bytes);
        if (header.Problem(out ulong diskSize, out bool notSupported) is { } problem)
            throw new NativeIOException(notSupported ? Errno.ENOTSUP : Errno.EINVAL, problem, file.Filename);
        // QEMU keeps the rounded size in its copy of the header, which is what it writes back.
        header.DiskSize = diskSize;

        long mapBytes = ((header.BlocksInImage * 4L) + 511) / 512 * 512;
        var map = new byte[mapBytes];
        try
        {
            await FormatIo.ReadAsync(file, header.OffsetBmap, map, ct).ConfigureAwait(false);
        }
        catch (NativeIOException e)
        {
            throw FormatIo.OpenError(file, e.Errno);
        }
        var bmap = new uint[header.BlocksInImage];
        for (int i = 0; i < bmap.Length; i++) bmap[i] = BinaryPrimitives.ReadUInt32LittleEndian(map.AsSpan(i * 4));
        return new VdiNode(nodeName, flags, file, header, bmap, (long)diskSize);
    }

    private long DataOffset(uint entry, long offsetInBlock) => _header.OffsetData + (long)entry * BlockSize + offsetInBlock;

    /// <inheritdoc />
    public override async ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        while (!buffer.IsEmpty)
        {
            long inBlock = offset % BlockSize;
            int n = (int)Math.Min(buffer.Length, BlockSize - inBlock);
            uint entry = Volatile.Read(ref _bmap[offset / BlockSize]);
            if (!IsAllocated(entry)) buffer.Span[..n].Clear();
            else await File.ReadAsync(DataOffset(entry, inBlock), buffer[..n], cancellationToken).ConfigureAwait(false);
            offset += n;
            buffer = buffer[n..];
        }
    }

    /// <inheritdoc />
    public override async ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default)
    {
        long firstNew = -1, lastNew = -1;
        while (!data.IsEmpty)
        {
            long index = offset / BlockSize;
            long inBlock = offset % BlockSize;
            int n = (int)Math.Min(data.Length, BlockSize - inBlock);
            uint entry = Volatile.Read(ref _bmap[index]);
            if (!IsAllocated(entry) && await AllocateAsync(index, inBlock, data[..n], cancellationToken).ConfigureAwait(false))
            {
                if (firstNew < 0) firstNew = index;
                lastNew = index;
            }
            else
            {
                entry = Volatile.Read(ref _bmap[index]);
                await File.WriteAsync(DataOffset(entry, inBlock), data[..n], WriteFlags.None, cancellationToken).ConfigureAwait(false);
            }
            offset += n;
            data = data[n..];
        }
        if (firstNew >= 0) await WriteMetadataAsync(firstNew, lastNew, cancellationToken).ConfigureAwait(false);
        if ((flags & WriteFlags.Fua) != 0) await File.FlushAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Allocates block <paramref name="index"/> and writes it whole: the data, zeroes around it.
    /// False when a concurrent write allocated it first (the caller then writes in place).
    /// </summary>
    private async ValueTask<bool> AllocateAsync(long index, long inBlock, ReadOnlyMemory<byte> data, CancellationToken ct)
    {
        await _allocation.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            if (IsAllocated(_bmap[index])) return false;
            uint entry = _header.BlocksAllocated;
            var block = new byte[BlockSize];
            data.Span.CopyTo(block.AsSpan((int)inBlock));
            Volatile.Write(ref _bmap[index], entry);
            _header.BlocksAllocated = entry + 1;
            // The whole block is written under the allocation lock, so no partial write of the
            // same block can land before it and be overwritten by its zeroes.
            await File.WriteAsync(DataOffset(entry, 0), block, WriteFlags.None, ct).ConfigureAwait(false);
            return true;
        }
        finally
        {
            _allocation.Release();
        }
    }

    /// <summary>The header, then the sectors of the block map from entry <paramref name="first"/> to <paramref name="last"/>.</summary>
    private async ValueTask WriteMetadataAsync(long first, long last, CancellationToken ct)
    {
        byte[] header;
        byte[] sectors;
        long firstSector = first / 128, lastSector = last / 128;
        await _allocation.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            header = _header.ToArray();
            sectors = new byte[(lastSector - firstSector + 1) * 512];
            for (long i = firstSector * 128; i < (lastSector + 1) * 128; i++)
            {
                uint entry = i < _bmap.Length ? _bmap[i] : 0;
                BinaryPrimitives.WriteUInt32LittleEndian(sectors.AsSpan((int)((i - firstSector * 128) * 4)), entry);
            }
        }
        finally
        {
            _allocation.Release();
        }
        await File.WriteAsync(0, header, WriteFlags.None, ct).ConfigureAwait(false);
        await File.WriteAsync(_header.OffsetBmap + firstSector * 512, sectors, WriteFlags.None, ct).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public override async ValueTask<BlockStatus> GetBlockStatusAsync(long offset, long length, CancellationToken cancellationToken = default)
    {
        length = Math.Min(length, _length - offset);
        if (length <= 0) return new BlockStatus(0, BlockStatusFlags.None);
        long inBlock = offset % BlockSize;
        long n = Math.Min(BlockSize - inBlock, length);
        uint entry = Volatile.Read(ref _bmap[offset / BlockSize]);
        if (!IsAllocated(entry)) return new BlockStatus(n, BlockStatusFlags.Zero | BlockStatusFlags.Allocated);
        long at = DataOffset(entry, inBlock);
        // Static images ask the file whether the block is a hole (BDRV_BLOCK_RECURSE).
        if (_header.ImageType == (uint)VdiImageType.Static) return await FormatIo.RecurseIntoFileAsync(File, at, n, cancellationToken).ConfigureAwait(false);
        return new BlockStatus(n, BlockStatusFlags.Data | BlockStatusFlags.Allocated, at, File);
    }

    /// <summary>
    /// vdi_co_check: every allocated entry must point inside the image and at a block no other
    /// entry uses, and blocks_allocated must match. Each problem is one line through
    /// <paramref name="log"/> and one corruption. vdi cannot repair (ENOTSUP with -r, which
    /// qemu-img reports as a format without checks).
    /// </summary>
    public override Task<ImageCheck> CheckAsync(RepairMode mode, Action<string>? log, CancellationToken cancellationToken = default)
    {
        if (mode != RepairMode.None) throw new NativeIOException(Errno.ENOTSUP, NativeIOException.Describe(Errno.ENOTSUP), Filename);
        return Task.FromResult(Check(log ?? (_ => { })));
    }

    private ImageCheck Check(Action<string> log)
    {
        var result = new ImageCheck();
        uint blocks = _header.BlocksInImage;
        var owners = new uint[blocks];
        owners.AsSpan().Fill(VdiHeader.Unallocated);
        uint allocated = 0;
        for (uint block = 0; block < blocks; block++)
        {
            uint entry = _bmap[block];
            if (!IsAllocated(entry)) continue;
            if (entry < blocks)
            {
                allocated++;
                if (!IsAllocated(owners[entry]))
                {
                    owners[entry] = entry;
                }
                else
                {
                    // QEMU's message names the entry twice (it stores the entry, not its owner).
                    log($"ERROR: block index {owners[entry]} also used by {entry}");
                    result.Corruptions++;
                }
            }
            else
            {
                log($"ERROR: block index {block} too large, is {entry}");
                result.Corruptions++;
            }
        }
        if (allocated != _header.BlocksAllocated)
        {
            log($"ERROR: allocated blocks mismatch, is {allocated}, should be {_header.BlocksAllocated}");
            result.Corruptions++;
        }
        return result;
    }

    /// <inheritdoc />
    public ImageInfo GetImageInfo() => new()
    {
        Filename = Filename,
        Format = DriverName,
        VirtualSize = Length,
        ActualSize = File.AllocatedSize,
        ClusterSize = BlockSize,
    };
}
