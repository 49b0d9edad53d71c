using System.Buffers.Binary;
using Vdisk.Graph;
using Vdisk.Native;
using Vdisk.Permissions;

namespace Vdisk.Drivers.Bochs;

/// <summary>
/// The <c>bochs</c> format (Bochs "growing" redolog images), read-only as in QEMU 7.2's
/// block/bochs.c. The disk is cut into extents; the catalog maps each extent to its place in the
/// file or marks it unwritten, and each placed extent starts with a bitmap of the sectors written
/// in it. Unwritten extents and sectors read as zeroes. QEMU looks up the bitmap one sector at a
/// time; this node reads the bitmap bytes a request needs once and each run of written sectors
/// with one read (the bytes returned are the same). Like QEMU's driver it reports no block
/// status of its own, so every range is data without a host offset.
/// </summary>
public sealed class BochsNode : BlockNode
{
    private const int SectorSize = 512;

    private readonly BdrvChild _fileChild;
    private readonly BochsHeader _header;
    private readonly uint[] _catalog;

    private BochsNode(string nodeName, NodeFlags flags, BlockNode file, BochsHeader header, uint[] catalog)
        : base(nodeName, flags, file.Filename)
    {
        _header = header;
        _catalog = catalog;
        _fileChild = AttachChild("file", file, ChildRole.Image);
    }

    /// <inheritdoc />
    public override string DriverName => "bochs";

    /// <inheritdoc />
    public override bool IsProtocol => false;

    /// <inheritdoc />
    public override IChildPermissionRule PermissionRule => DefaultChildPermissionRule.Instance;

    /// <summary>The file child's node.</summary>
    public BlockNode File => _fileChild.Node;

    /// <inheritdoc />
    public override long Length => _header.TotalSectors * SectorSize;

    /// <inheritdoc />
    /// <remarks>bochs has no bdrv_get_info: qemu-img info shows no cluster size or dirty flag.</remarks>
    public override bool HasDriverInfo => false;

    /// <summary>Opens the image on <paramref name="file"/> with bochs_open's checks and messages.</summary>
    public static async Task<BochsNode> OpenAsync(string nodeName, NodeFlags flags, BlockNode file, CancellationToken ct = default)
    {
        var head = new byte[BochsHeader.Size];
        await ReadOrOpenErrorAsync(file, 0, head, ct).ConfigureAwait(false);
        var header = BochsHeader.Parse(head, file.Filename);
        var bytes = new byte[header.CatalogEntries * 4L];
        await ReadOrOpenErrorAsync(file, header.HeaderSize, bytes, ct).ConfigureAwait(false);
        var catalog = new uint[header.CatalogEntries];
        for (int i = 0; i < catalog.Length; i++) catalog[i] = BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(i * 4));
        header.Validate(file.Filename);
        return new BochsNode(nodeName, flags, file, header, catalog);
    }

    private static async ValueTask ReadOrOpenErrorAsync(BlockNode file, long offset, Memory<byte> buffer, CancellationToken ct)
    {
        try
        {
            await FormatIo.ReadAsync(file, offset, buffer, ct).ConfigureAwait(false);
        }
        catch (NativeIOException e)
        {
            throw FormatIo.OpenError(file, e.Errno);
        }
    }

    /// <summary>Where extent <paramref name="index"/>'s bitmap starts in the file, or null for an unwritten extent (seek_to_sector).</summary>
    private ulong? BitmapOffset(long index)
    {
        uint entry = _catalog[index];
        if (entry == BochsHeader.Unallocated) return null;
        // 64-bit product of a 32-bit sum, as QEMU computes it.
        return unchecked(_header.DataOffset + SectorSize * (ulong)entry * unchecked(_header.ExtentSectors + _header.BitmapSectors));
    }

    /// <inheritdoc />
    public override async ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        long extentSize = _header.ExtentSize;
        while (!buffer.IsEmpty)
        {
            long index = offset / extentSize;
            long inExtent = offset % extentSize;
            int n = (int)Math.Min(buffer.Length, extentSize - inExtent);
            if (BitmapOffset(index) is { } bitmapAt) await ReadExtentAsync(bitmapAt, inExtent, buffer[..n], cancellationToken).ConfigureAwait(false);
            else buffer.Span[..n].Clear();
            offset += n;
            buffer = buffer[n..];
        }
    }

    /// <summary>
    /// Reads <paramref name="buffer"/> from offset <paramref name="inExtent"/> of a placed extent:
    /// the bitmap bits of the sectors it touches, then each run of written sectors.
    /// </summary>
    private async ValueTask ReadExtentAsync(ulong bitmapAt, long inExtent, Memory<byte> buffer, CancellationToken ct)
    {
        long firstSector = inExtent / SectorSize;
        long lastSector = (inExtent + buffer.Length - 1) / SectorSize;
        var bitmap = new byte[lastSector / 8 - firstSector / 8 + 1];
        await ReadFileAsync(bitmapAt + (ulong)(firstSector / 8), bitmap, ct).ConfigureAwait(false);
        bool Written(long sector)
        {
            long bit = sector - firstSector / 8 * 8;
            return ((bitmap[bit / 8] >> (int)(bit % 8)) & 1) != 0;
        }
        ulong dataAt = bitmapAt + SectorSize * (ulong)_header.BitmapSectors;
        long sectorIndex = firstSector;
        int done = 0;
        while (done < buffer.Length)
        {
            bool written = Written(sectorIndex);
            long runEnd = sectorIndex + 1;
            while (runEnd <= lastSector && Written(runEnd) == written) runEnd++;
            long runStartByte = Math.Max(inExtent, sectorIndex * SectorSize);
            int length = (int)(Math.Min(inExtent + buffer.Length, runEnd * SectorSize) - runStartByte);
            var piece = buffer.Slice(done, length);
            if (written) await ReadFileAsync(dataAt + (ulong)runStartByte, piece, ct).ConfigureAwait(false);
            else piece.Span.Clear();
            done += length;
            sectorIndex = runEnd;
        }
    }

    /// <summary>A read of the file child at an offset computed in 64-bit unsigned arithmetic (bdrv_pread's range check decides).</summary>
    private ValueTask ReadFileAsync(ulong offset, Memory<byte> buffer, CancellationToken ct) =>
        FormatIo.ReadAsync(File, offset > long.MaxValue ? -1 : (long)offset, buffer, ct);

    /// <inheritdoc />
    public override ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default) =>
        throw new NativeIOException(Errno.EACCES, NativeIOException.Describe(Errno.EACCES), Filename);

    /// <inheritdoc />
    /// <remarks>No bdrv_co_block_status in bochs: the generic answer, data without a host offset.</remarks>
    public override ValueTask<BlockStatus> GetBlockStatusAsync(long offset, long length, CancellationToken cancellationToken = default)
    {
        length = Math.Min(length, Length - offset);
        if (length <= 0) return ValueTask.FromResult(new BlockStatus(0, BlockStatusFlags.None));
        return ValueTask.FromResult(new BlockStatus(length, BlockStatusFlags.Data | BlockStatusFlags.Allocated));
    }
}
