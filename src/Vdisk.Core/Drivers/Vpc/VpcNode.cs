using System.Buffers.Binary;
using Vdisk.Graph;
using Vdisk.Native;
using Vdisk.Permissions;

namespace Vdisk.Drivers.Vpc;

/// <summary>
/// The <c>vpc</c> format (Virtual PC / Hyper-V VHD), as QEMU 7.2's block/vpc.c: fixed disks map
/// 1:1 onto the file; dynamic disks map blocks through the block allocation table, each
/// allocated block being a sector bitmap followed by the data. QEMU ignores the bitmaps when
/// reading (an allocated block is read whole) and sets them to all ones before writing, and so
/// does this node. A new block goes where the footer was: bitmap, then the footer moved past
/// the block, then the table entry, each flushed before the next.
/// </summary>
public sealed class VpcNode : BlockNode, IImageInfoSource
{
    private const uint Unallocated = 0xFFFFFFFF;

    private readonly BdrvChild _fileChild;
    private readonly VpcFooter _footer;
    private readonly byte[] _footerBytes;
    private readonly long _length;
    private readonly uint[]? _bat;
    private readonly long _batOffset;
    private readonly long _blockSize;
    private readonly int _bitmapSize;
    private long _freeDataBlockOffset;
    private readonly SemaphoreSlim _allocation = new(1, 1);
    // Blocks whose bitmap this node has set to all ones (QEMU remembers only the last one and
    // rewrites the others again; the file ends up the same).
    private readonly HashSet<uint> _bitmapSet = new();

    private VpcNode(string nodeName, NodeFlags flags, BlockNode file, VpcFooter footer, long length,
        uint[]? bat, long batOffset, long blockSize, long freeDataBlockOffset)
        : base(nodeName, flags, file.Filename)
    {
        _footer = footer;
        _footerBytes = footer.ToArray();
        _length = length;
        _bat = bat;
        _batOffset = batOffset;
        _blockSize = blockSize;
        _bitmapSize = blockSize == 0 ? 0 : BitmapSizeFor(blockSize);
        _freeDataBlockOffset = freeDataBlockOffset;
        _fileChild = AttachChild("file", file, ChildRole.Image);
    }

    /// <summary>Bytes of a block's sector bitmap: one bit per sector, padded to a sector.</summary>
    public static int BitmapSizeFor(long blockSize) => (int)(((blockSize / (8 * 512)) + 511) & ~511L);

    /// <inheritdoc />
    public override string DriverName => "vpc";

    /// <inheritdoc />
    public override bool IsProtocol => false;

    /// <inheritdoc />
    public override IChildPermissionRule PermissionRule => DefaultChildPermissionRule.Instance;

    /// <summary>The file child's node.</summary>
    public BlockNode File => _fileChild.Node;

    /// <summary>The footer as read.</summary>
    public VpcFooter Footer => _footer;

    /// <summary>True when the footer says "fixed": QEMU then maps the whole disk onto the file.</summary>
    public bool IsFixed => _footer.Type == (uint)VpcDiskType.Fixed;

    /// <summary>Block size of a dynamic disk (0 for fixed disks).</summary>
    public long BlockSize => _blockSize;

    /// <inheritdoc />
    public override long Length => _length;

    /// <summary>
    /// Opens the image on <paramref name="file"/> with vpc_open's checks and messages;
    /// <paramref name="forceChs"/>/<paramref name="forceCurrentSize"/> are <c>force_size_calc</c>.
    /// </summary>
    public static async Task<VpcNode> OpenAsync(string nodeName, NodeFlags flags, BlockNode file, bool forceChs, bool forceCurrentSize, CancellationToken ct = default)
    {
        var buffer = new byte[VpcFooter.Size];
        try
        {
            await FormatIo.ReadAsync(file, 0, buffer, ct).ConfigureAwait(false);
        }
        catch (NativeIOException)
        {
            throw new NativeIOException(Errno.EIO, "Unable to read VHD header", file.Filename);
        }
        bool dynamic = true;
        if (!VpcFooter.HasCookie(buffer))
        {
            long fileLength = file.Length;
            if (fileLength < VpcFooter.Size) throw new NativeIOException(Errno.EINVAL, "File too small for a VHD header", file.Filename);
            // A fixed disk has its footer only at the end of the file.
            await FormatIo.ReadAsync(file, fileLength - VpcFooter.Size, buffer, ct).ConfigureAwait(false);
            if (!VpcFooter.HasCookie(buffer) || VpcFooter.Parse(buffer).Type != (uint)VpcDiskType.Fixed)
                throw new NativeIOException(Errno.EINVAL, "invalid VPC image", file.Filename);
            dynamic = false;
        }
        var footer = VpcFooter.Parse(buffer);
        if (footer.ComputedChecksum() != footer.Checksum) throw new NativeIOException(Errno.EINVAL, "Incorrect header checksum", file.Filename);

        long totalSectors = footer.VirtualSectors(forceChs, forceCurrentSize);
        if (totalSectors > VpcGeometry.MaxSectors) throw FormatIo.OpenError(file, Errno.EFBIG);
        if (!dynamic) return new VpcNode(nodeName, flags, file, footer, totalSectors * 512, null, 0, 0, 0);

        var headerBytes = new byte[VpcDynamicHeader.Size];
        ulong dataOffset = footer.DataOffset;
        if (dataOffset > long.MaxValue || !FormatIo.InRange((long)dataOffset, headerBytes.Length))
            throw new NativeIOException(Errno.EIO, "Error reading dynamic VHD header", file.Filename);
        await FormatIo.ReadAsync(file, (long)dataOffset, headerBytes, ct).ConfigureAwait(false);
        var header = VpcDynamicHeader.Parse(headerBytes);
        if (!header.HasCookie) throw new NativeIOException(Errno.EINVAL, "Invalid header magic", file.Filename);

        uint blockSize = header.BlockSize;
        if (blockSize < 512 || (blockSize & (blockSize - 1)) != 0)
            throw new NativeIOException(Errno.EINVAL, $"Invalid block size {blockSize}", file.Filename);
        int entries = header.MaxTableEntries;
        if (totalSectors * 512 / blockSize > 0xffffffffL) throw new NativeIOException(Errno.EINVAL, "Too many blocks", file.Filename);
        // (uint64_t) of QEMU's int: a negative count wraps to a huge one here, and is caught next.
        ulong computedSize = unchecked((ulong)(long)entries * blockSize);
        if (computedSize < (ulong)(totalSectors * 512)) throw new NativeIOException(Errno.EINVAL, "Page table too small", file.Filename);
        if (entries < 0 || entries > int.MaxValue / 4)
            throw new NativeIOException(Errno.EINVAL, $"Max Table Entries too large ({entries})", file.Filename);

        ulong batOffset = header.TableOffset;
        var table = new byte[entries * 4];
        if (batOffset > long.MaxValue || !FormatIo.InRange((long)batOffset, table.Length))
            throw new NativeIOException(Errno.EIO, "Error reading pagetable", file.Filename);
        await FormatIo.ReadAsync(file, (long)batOffset, table, ct).ConfigureAwait(false);
        var bat = new uint[entries];
        long free = ((long)batOffset + table.Length + 511) & ~511L;
        int bitmapSize = BitmapSizeFor(blockSize);
        for (int i = 0; i < entries; i++)
        {
            bat[i] = BinaryPrimitives.ReadUInt32BigEndian(table.AsSpan(i * 4));
            if (bat[i] != Unallocated) free = Math.Max(free, 512L * bat[i] + bitmapSize + blockSize);
        }
        if (free > file.Length)
            throw new NativeIOException(Errno.EINVAL, "block-vpc: free_data_block_offset points after the end of file. The image has been truncated.", file.Filename);
        return new VpcNode(nodeName, flags, file, footer, totalSectors * 512, bat, (long)batOffset, blockSize, free);
    }

    /// <summary>Where a guest offset lives in the file, or -1 when its block is not allocated (get_image_offset).</summary>
    private long ImageOffset(long offset)
    {
        long index = offset / _blockSize;
        if (index >= _bat!.Length || _bat[index] == Unallocated) return -1;
        return 512L * _bat[index] + _bitmapSize + offset % _blockSize;
    }

    /// <inheritdoc />
    public override async ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        if (IsFixed)
        {
            await File.ReadAsync(offset, buffer, cancellationToken).ConfigureAwait(false);
            return;
        }
        while (!buffer.IsEmpty)
        {
            int n = (int)Math.Min(buffer.Length, _blockSize - offset % _blockSize);
            long at = ImageOffset(offset);
            if (at < 0) buffer.Span[..n].Clear();
            else await File.ReadAsync(at, buffer[..n], cancellationToken).ConfigureAwait(false);
            offset += n;
            buffer = buffer[n..];
        }
    }

    /// <inheritdoc />
    public override async ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default)
    {
        if (IsFixed)
        {
            await File.WriteAsync(offset, data, flags, cancellationToken).ConfigureAwait(false);
            return;
        }
        while (!data.IsEmpty)
        {
            int n = (int)Math.Min(data.Length, _blockSize - offset % _blockSize);
            long at = await PrepareBlockForWriteAsync(offset, cancellationToken).ConfigureAwait(false);
            await File.WriteAsync(at, data[..n], WriteFlags.None, cancellationToken).ConfigureAwait(false);
            offset += n;
            data = data[n..];
        }
        if ((flags & WriteFlags.Fua) != 0) await File.FlushAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// The file offset a write at <paramref name="offset"/> goes to: the block is allocated
    /// first if needed (alloc_block), and an existing block's bitmap is set to all ones once, so
    /// tools that honour the bitmap see what QEMU reads.
    /// </summary>
    private async ValueTask<long> PrepareBlockForWriteAsync(long offset, CancellationToken ct)
    {
        uint index = (uint)(offset / _blockSize);
        long at = ImageOffset(offset);
        if (at >= 0)
        {
            lock (_bitmapSet)
                if (_bitmapSet.Contains(index)) return at;
        }
        await _allocation.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            at = ImageOffset(offset);
            if (at >= 0)
            {
                lock (_bitmapSet)
                    if (_bitmapSet.Contains(index)) return at;
                long bitmapAt = 512L * _bat![index];
                await FormatIo.WriteSyncAsync(File, bitmapAt, AllOnesBitmap(), ct).ConfigureAwait(false);
                lock (_bitmapSet) _bitmapSet.Add(index);
                return at;
            }
            await AllocateBlockAsync(index, ct).ConfigureAwait(false);
            return ImageOffset(offset);
        }
        finally
        {
            _allocation.Release();
        }
    }

    private byte[] AllOnesBitmap()
    {
        var bitmap = new byte[_bitmapSize];
        bitmap.AsSpan().Fill(0xff);
        return bitmap;
    }

    /// <summary>alloc_block: bitmap where the footer was, the footer past the new block, then the table entry.</summary>
    private async ValueTask AllocateBlockAsync(uint index, CancellationToken ct)
    {
        long blockAt = _freeDataBlockOffset;
        await FormatIo.WriteSyncAsync(File, blockAt, AllOnesBitmap(), ct).ConfigureAwait(false);
        long newFree = blockAt + _blockSize + _bitmapSize;
        await FormatIo.WriteSyncAsync(File, newFree, _footerBytes, ct).ConfigureAwait(false);
        var entry = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(entry, (uint)(blockAt / 512));
        await FormatIo.WriteSyncAsync(File, _batOffset + 4L * index, entry, ct).ConfigureAwait(false);
        _freeDataBlockOffset = newFree;
        lock (_bitmapSet) _bitmapSet.Add(index);
        Volatile.Write(ref _bat![index], (uint)(blockAt / 512));
    }

    /// <inheritdoc />
    public override async ValueTask<BlockStatus> GetBlockStatusAsync(long offset, long length, CancellationToken cancellationToken = default)
    {
        length = Math.Min(length, _length - offset);
        if (length <= 0) return new BlockStatus(0, BlockStatusFlags.None);
        if (IsFixed) return await FormatIo.RecurseIntoFileAsync(File, offset, length, cancellationToken).ConfigureAwait(false);
        long at = ImageOffset(offset);
        long n = Math.Min(length, _blockSize - offset % _blockSize);
        // All sectors of a block are contiguous in the file; unallocated blocks run together.
        if (at >= 0) return new BlockStatus(n, BlockStatusFlags.Data | BlockStatusFlags.Allocated, at, File);
        while (n < length && ImageOffset(offset + n) < 0) n += Math.Min(length - n, _blockSize);
        return new BlockStatus(n, BlockStatusFlags.Zero | BlockStatusFlags.Allocated);
    }

    /// <inheritdoc />
    public ImageInfo GetImageInfo() => new()
    {
        Filename = Filename,
        Format = DriverName,
        VirtualSize = Length,
        ActualSize = File.AllocatedSize,
        ClusterSize = IsFixed ? null : _blockSize,
    };
}
