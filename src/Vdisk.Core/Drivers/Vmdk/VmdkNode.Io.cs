using Vdisk.Graph;
using Vdisk.Native;

namespace Vdisk.Drivers.Vmdk;

public sealed partial class VmdkNode
{
    /// <summary>QEMU's VMDK_EXTENT_MAX_SECTORS: grain table entries are 32-bit sector numbers.</summary>
    private const long MaxExtentSectors = 1L << 32;

    /// <summary>The bounce buffer of a zero write that falls back to writing zeroes (MAX_BOUNCE_BUFFER).</summary>
    private const int ZeroBounceBytes = 16 << 20;

    /// <summary>New grains written in one go before their grain table entries are updated.</summary>
    private const int MaxAllocationBatchBytes = 8 << 20;

    /// <summary>A run of guest bytes of one extent stored the same way.</summary>
    /// <param name="Kind">How it is stored.</param>
    /// <param name="HostOffset">Host byte offset of the run's first byte (allocated, uncompressed), or of its grain (compressed).</param>
    /// <param name="Bytes">Length of the run.</param>
    /// <param name="Failed">The lookup failed (QEMU's VMDK_ERROR: outside the directory, or a table unreadable).</param>
    private readonly record struct Run(VmdkGrainKind Kind, long HostOffset, long Bytes, bool Failed = false);

    /// <summary>The last decompressed grain (its host offset and bytes), swapped as one reference.</summary>
    private sealed record DecompressedGrain(VmdkExtent Extent, long HostOffset, byte[] Data);

    private DecompressedGrain? _lastDecompressed;

    /// <summary>find_extent: the extent holding guest sector <paramref name="sector"/>.</summary>
    private VmdkExtent? FindExtent(long sector)
    {
        foreach (var e in _extents)
            if (sector < e.EndSector) return e;
        return null;
    }

    private static NativeIOException Error(int errno) => new(errno, NativeIOException.Describe(errno));

    private void EnsureOpen() => ObjectDisposedException.ThrowIf(_closed, this);

    /// <summary>
    /// The run at <paramref name="offset"/> (at most <paramref name="maxBytes"/>, within the
    /// extent): following grains are joined while they are stored the same way (allocated ones
    /// only while contiguous on the host; compressed grains one at a time). Under the lock.
    /// </summary>
    private async ValueTask<Run> MapRunLockedAsync(VmdkExtent extent, long offset, long maxBytes, CancellationToken ct)
    {
        long extentEnd = extent.EndSector * 512;
        maxBytes = Math.Min(maxBytes, extentEnd - offset);
        long inGrain = extent.OffsetInGrain(offset);
        if (extent.IsFlat) return new Run(VmdkGrainKind.Allocated, extent.FlatStartOffset + inGrain, maxBytes);
        var first = await LookupAsync(extent, offset, ct).ConfigureAwait(false);
        long bytes = Math.Min(maxBytes, extent.GrainBytes - inGrain);
        if (first is not { } g) return new Run(VmdkGrainKind.Unallocated, 0, bytes, Failed: true);
        if (extent.IsCompressed && g.Kind == VmdkGrainKind.Allocated) return new Run(g.Kind, g.HostOffset, bytes);
        long host = g.Kind == VmdkGrainKind.Allocated ? g.HostOffset + inGrain : 0;
        while (bytes < maxBytes)
        {
            var next = await LookupAsync(extent, offset + bytes, ct).ConfigureAwait(false);
            if (next is not { } n || n.Kind != g.Kind) break;
            if (g.Kind == VmdkGrainKind.Allocated && n.HostOffset != host + bytes) break;
            bytes = Math.Min(maxBytes, bytes + extent.GrainBytes);
        }
        return new Run(g.Kind, host, bytes);
    }

    /// <summary>get_cluster_offset without allocation; null for VMDK_ERROR (a table that cannot be read counts as one).</summary>
    private static async ValueTask<VmdkGrain?> LookupAsync(VmdkExtent extent, long offset, CancellationToken ct)
    {
        try
        {
            return await extent.LookupAsync(offset, ct).ConfigureAwait(false);
        }
        catch (IOException)
        {
            return null;
        }
    }

    /// <inheritdoc />
    public override async ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        EnsureOpen();
        long pos = 0;
        while (pos < buffer.Length)
        {
            long at = offset + pos;
            var extent = FindExtent(at >> 9) ?? throw Error(Errno.EIO);
            Run run;
            await _lock.WaitAsync(cancellationToken).ConfigureAwait(false);
            try
            {
                run = await MapRunLockedAsync(extent, at, buffer.Length - pos, cancellationToken).ConfigureAwait(false);
            }
            finally
            {
                _lock.Release();
            }
            var segment = buffer.Slice((int)pos, (int)run.Bytes);
            switch (run.Kind)
            {
                case VmdkGrainKind.Allocated when extent.IsCompressed:
                    await extent.File.Node.DebugEventAsync(BlkdebugEvent.ReadCompressed).ConfigureAwait(false);
                    long inGrain = extent.OffsetInGrain(at);
                    if (inGrain == 0 && segment.Length == extent.GrainBytes)
                    {
                        // A whole grain (convert's reads): inflated straight into the caller's buffer.
                        if (await InflateGrainAsync(extent, run.HostOffset, segment, cancellationToken).ConfigureAwait(false) != segment.Length)
                            throw Error(Errno.EINVAL);
                        break;
                    }
                    var grain = await DecompressedGrainAsync(extent, run.HostOffset, cancellationToken).ConfigureAwait(false);
                    if (inGrain + segment.Length > grain.Length) throw Error(Errno.EINVAL);
                    grain.AsSpan((int)inGrain, segment.Length).CopyTo(segment.Span);
                    break;
                case VmdkGrainKind.Allocated:
                    await extent.File.Node.DebugEventAsync(BlkdebugEvent.ReadAio).ConfigureAwait(false);
                    await extent.File.Node.ReadAsync(run.HostOffset, segment, cancellationToken).ConfigureAwait(false);
                    break;
                case VmdkGrainKind.Unallocated when Backing is not null:
                    // Unallocated (and, as in QEMU, unreadable) grains come from the parent.
                    await File.DebugEventAsync(BlkdebugEvent.ReadBackingAio).ConfigureAwait(false);
                    await ReadBackingAsync(at, segment, cancellationToken).ConfigureAwait(false);
                    break;
                default:
                    segment.Span.Clear();
                    break;
            }
            pos += run.Bytes;
        }
    }

    /// <summary>Reads the parent's bytes (zeroes past its end), once the parent's CID is the one this image was made on.</summary>
    private async ValueTask ReadBackingAsync(long offset, Memory<byte> segment, CancellationToken ct)
    {
        if (!await IsParentCidValidAsync(ct).ConfigureAwait(false)) throw Error(Errno.EINVAL);
        var backing = Backing!;
        long available = Math.Clamp(backing.Length - offset, 0, segment.Length);
        if (available > 0) await backing.ReadAsync(offset, segment[..(int)available], ct).ConfigureAwait(false);
        segment.Span[(int)available..].Clear();
    }

    /// <summary>
    /// vmdk_is_cid_valid: a parent that is not a vmdk image, or whose CID (read afresh from its
    /// descriptor) is not this image's parentCID, makes reads through it fail with EINVAL.
    /// </summary>
    private async ValueTask<bool> IsParentCidValidAsync(CancellationToken ct)
    {
        if (_cidChecked || Backing is null) return true;
        if (Backing is not VmdkNode parent) return false;
        uint? current;
        try
        {
            var area = await parent.ReadDescriptorAreaAsync(ct).ConfigureAwait(false);
            current = VmdkDescriptor.ReadCid(VmdkDescriptor.CString(area), parent: false);
        }
        catch (IOException)
        {
            return false;
        }
        if (current != ParentCid) return false;
        _cidChecked = true;
        return true;
    }

    /// <summary>vmdk_read_extent for a compressed grain (two grains read, marker, inflate), with a one-grain cache.</summary>
    private async ValueTask<byte[]> DecompressedGrainAsync(VmdkExtent extent, long host, CancellationToken ct)
    {
        if (_lastDecompressed is { } last && last.Extent == extent && last.HostOffset == host) return last.Data;
        var data = new byte[extent.GrainBytes];
        int n = await InflateGrainAsync(extent, host, data, ct).ConfigureAwait(false);
        if (n < 0) throw Error(Errno.EINVAL);
        Array.Resize(ref data, n);
        _lastDecompressed = new DecompressedGrain(extent, host, data);
        return data;
    }

    /// <summary>Reads the stored grain at <paramref name="host"/> (two grains' worth, as QEMU) and inflates it into <paramref name="output"/>; -1 when it is bad.</summary>
    private static async ValueTask<int> InflateGrainAsync(VmdkExtent extent, long host, Memory<byte> output, CancellationToken ct)
    {
        int storedLength = (int)extent.GrainBytes * 2;
        var stored = System.Buffers.ArrayPool<byte>.Shared.Rent(storedLength);
        try
        {
            // QEMU reads two grains; the marker says how much of them is data, which is rarely
            // more than a grain and a page even for incompressible data, so read that first.
            int first = extent.HasMarkers ? Math.Min(storedLength, (int)extent.GrainBytes + 4096) : storedLength;
            await extent.File.Node.ReadAsync(host, stored.AsMemory(0, first), ct).ConfigureAwait(false);
            if (first < storedLength && System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(stored.AsSpan(8)) + VmdkMarker.GrainHeaderSize > (uint)first)
                await extent.File.Node.ReadAsync(host + first, stored.AsMemory(first, storedLength - first), ct).ConfigureAwait(false);
            return VmdkGrainCodec.Decompress(stored, storedLength, extent.HasMarkers, output.Span);
        }
        finally
        {
            System.Buffers.ArrayPool<byte>.Shared.Return(stored);
        }
    }

    /// <inheritdoc />
    public override async ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default)
    {
        EnsureOpen();
        await _lock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            await WriteLockedAsync(offset, data, cancellationToken).ConfigureAwait(false);
            if ((flags & WriteFlags.Fua) != 0) await FlushFilesAsync(cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            _lock.Release();
        }
    }

    /// <summary>vmdk_pwritev for data: flat extents written in place, sparse grains in place or allocated, compressed grains appended.</summary>
    private async ValueTask WriteLockedAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken ct)
    {
        if ((offset + 511) / 512 > _totalSectors) throw Error(Errno.EIO);
        long pos = 0;
        while (pos < data.Length)
        {
            long at = offset + pos;
            var extent = FindExtent(at >> 9) ?? throw Error(Errno.EIO);
            var rest = data[(int)pos..];
            long done;
            if (extent.IsFlat)
            {
                long n = Math.Min(rest.Length, extent.EndSector * 512 - at);
                await extent.File.Node.DebugEventAsync(BlkdebugEvent.WriteAio).ConfigureAwait(false);
                await extent.File.Node.WriteAsync(extent.FlatStartOffset + extent.OffsetInGrain(at), rest[..(int)n], WriteFlags.None, ct).ConfigureAwait(false);
                done = n;
            }
            else if (extent.IsCompressed)
            {
                done = await WriteCompressedGrainAsync(extent, at, rest, ct).ConfigureAwait(false);
            }
            else
            {
                done = await WriteSparseRunAsync(extent, at, rest, ct).ConfigureAwait(false);
            }
            pos += done;
            await UpdateCidOnceAsync(ct).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Writes into a sparse extent from <paramref name="offset"/>: a run of allocated grains in
    /// place, or a run of new grains (QEMU's get_whole_cluster: the parts the request does not
    /// cover come from the parent, or are zeroes) written in one go before their table entries.
    /// Returns the bytes consumed.
    /// </summary>
    private async ValueTask<long> WriteSparseRunAsync(VmdkExtent extent, long offset, ReadOnlyMemory<byte> data, CancellationToken ct)
    {
        var first = await LookupAsync(extent, offset, ct).ConfigureAwait(false) ?? throw Error(Errno.EINVAL);
        long extentEnd = extent.EndSector * 512;
        long limit = Math.Min(data.Length, extentEnd - offset);
        long inGrain = extent.OffsetInGrain(offset);
        long firstBytes = Math.Min(limit, extent.GrainBytes - inGrain);
        if (first.Kind == VmdkGrainKind.Allocated)
        {
            long host = first.HostOffset + inGrain;
            long bytes = firstBytes;
            while (bytes < limit)
            {
                var next = await LookupAsync(extent, offset + bytes, ct).ConfigureAwait(false);
                if (next is not { Kind: VmdkGrainKind.Allocated } n || n.HostOffset != host + bytes) break;
                bytes = Math.Min(limit, bytes + extent.GrainBytes);
            }
            await extent.File.Node.DebugEventAsync(BlkdebugEvent.WriteAio).ConfigureAwait(false);
            await extent.File.Node.WriteAsync(host, data[..(int)bytes], WriteFlags.None, ct).ConfigureAwait(false);
            return bytes;
        }

        // New grains: the first, then following unallocated ones while the batch allows.
        var grains = new List<VmdkGrain> { first };
        long covered = firstBytes;
        while (covered < limit && (grains.Count + 1) * extent.GrainBytes <= MaxAllocationBatchBytes)
        {
            var next = await LookupAsync(extent, offset + covered, ct).ConfigureAwait(false);
            if (next is not { } n || n.Kind == VmdkGrainKind.Allocated) break;
            grains.Add(n);
            covered = Math.Min(limit, covered + extent.GrainBytes);
        }
        foreach (var g in grains)
            if (g.TableOffset == 0) throw Error(Errno.EINVAL); // no grain table to record it in
        if (extent.NextGrainSector + grains.Count * extent.GrainSectors > MaxExtentSectors) throw Error(Errno.EINVAL);
        if (Backing is not null && !await IsParentCidValidAsync(ct).ConfigureAwait(false)) throw Error(Errno.EINVAL);

        long grainStart = extent.GrainStart(offset);
        var buffer = new byte[grains.Count * extent.GrainBytes];
        // get_whole_cluster's events, then vmdk_write_extent's: here one write carries both.
        bool copiesFromParent = Backing is not null && grains.Any(g => g.Kind != VmdkGrainKind.Zeroed);
        if (copiesFromParent) await extent.File.Node.DebugEventAsync(BlkdebugEvent.CowRead).ConfigureAwait(false);
        for (int i = 0; i < grains.Count; i++)
        {
            long start = grainStart + i * extent.GrainBytes;
            // Parts of the grain outside [offset, offset + covered) come from the parent unless
            // the grain was zeroed in this image.
            long headEnd = Math.Max(0, Math.Min(extent.GrainBytes, offset - start));
            long tailStart = Math.Min(extent.GrainBytes, Math.Max(0, offset + covered - start));
            if (Backing is not null && grains[i].Kind != VmdkGrainKind.Zeroed)
            {
                var slot = buffer.AsMemory((int)(i * extent.GrainBytes), (int)extent.GrainBytes);
                if (headEnd > 0) await ReadBackingAsync(start, slot[..(int)headEnd], ct).ConfigureAwait(false);
                if (tailStart < extent.GrainBytes) await ReadBackingAsync(start + tailStart, slot[(int)tailStart..], ct).ConfigureAwait(false);
            }
        }
        data.Span[..(int)covered].CopyTo(buffer.AsSpan((int)(offset - grainStart)));

        long hostSector = extent.NextGrainSector;
        extent.NextGrainSector += grains.Count * extent.GrainSectors;
        if (copiesFromParent) await extent.File.Node.DebugEventAsync(BlkdebugEvent.CowWrite).ConfigureAwait(false);
        await extent.File.Node.DebugEventAsync(BlkdebugEvent.WriteAio).ConfigureAwait(false);
        await extent.File.Node.WriteAsync(hostSector << 9, buffer, WriteFlags.None, ct).ConfigureAwait(false);
        await RecordGrainsAsync(extent, grains, i => (uint)(hostSector + i * extent.GrainSectors), ct).ConfigureAwait(false);
        return covered;
    }

    /// <summary>vmdk_L2update for a list of grains: their entries set (in groups of consecutive entries), then one flush.</summary>
    private static async ValueTask RecordGrainsAsync(VmdkExtent extent, List<VmdkGrain> grains, Func<int, uint> value, CancellationToken ct)
    {
        int i = 0;
        while (i < grains.Count)
        {
            int j = i + 1;
            while (j < grains.Count && grains[j].TableOffset == grains[i].TableOffset && grains[j].EntryIndex == grains[j - 1].EntryIndex + 1) j++;
            var values = new uint[j - i];
            for (int k = i; k < j; k++) values[k - i] = value(k);
            await extent.UpdateEntriesAsync(grains[i].TableIndex, grains[i].TableOffset, grains[i].EntryIndex, values, ct).ConfigureAwait(false);
            i = j;
        }
        await extent.File.Node.FlushAsync(ct).ConfigureAwait(false);
    }

    /// <summary>
    /// One grain of a stream-optimized extent: only a whole grain (or the extent's last, shorter
    /// one) that was never written, compressed behind its marker where the last one ended.
    /// </summary>
    private async ValueTask<long> WriteCompressedGrainAsync(VmdkExtent extent, long offset, ReadOnlyMemory<byte> data, CancellationToken ct, byte[]? precompressed = null)
    {
        long inGrain = extent.OffsetInGrain(offset);
        long n = Math.Min(data.Length, extent.GrainBytes - inGrain);
        var grain = await LookupAsync(extent, offset, ct).ConfigureAwait(false) ?? throw Error(Errno.EINVAL);
        if (grain.Kind == VmdkGrainKind.Allocated)
        {
            Diagnostics.Error("Could not write to allocated cluster for streamOptimized");
            throw Error(Errno.EIO);
        }
        if (grain.TableOffset == 0) throw Error(Errno.EINVAL);
        if (inGrain != 0 || (n < extent.GrainBytes && offset + n != extent.EndSector * 512) || !extent.HasMarkers)
            throw Error(Errno.EINVAL);
        if (extent.NextGrainSector >= MaxExtentSectors) throw Error(Errno.EINVAL);
        var compressed = precompressed ?? VmdkGrainCodec.Deflate(data.Span[..(int)n]);
        // QEMU first writes the whole grain (zeroes) and then the marker and data over it, so
        // the file always extends a whole grain past the newest one's start.
        var buffer = VmdkGrainCodec.WithMarker(offset >> 9, compressed, (int)extent.GrainBytes);
        long host = extent.NextGrainSector << 9;
        await extent.File.Node.DebugEventAsync(BlkdebugEvent.WriteCompressed).ConfigureAwait(false);
        await extent.File.Node.WriteAsync(host, buffer, WriteFlags.None, ct).ConfigureAwait(false);
        extent.NextGrainSector = (host + VmdkMarker.GrainHeaderSize + compressed.Length + 511) / 512;
        await RecordGrainsAsync(extent, [grain], _ => (uint)(host >> 9), ct).ConfigureAwait(false);
        return n;
    }

    /// <inheritdoc />
    /// <remarks>vmdk_co_check: ENOTSUP for any repair (qemu-img then says the format has no checks).</remarks>
    public override Task<ImageCheck> CheckAsync(RepairMode mode, Action<string>? log, CancellationToken cancellationToken = default) =>
        VmdkCheck.RunAsync(this, mode, log, cancellationToken);

    /// <inheritdoc />
    public override bool SupportsCompressedWrites => true;

    /// <inheritdoc />
    public override bool RequiresCompressedWrites => _extents.Count > 0 && _extents[0].IsCompressed;

    /// <inheritdoc />
    public override int CompressedWriteUnit => (int)(ClusterSize ?? 0);

    /// <inheritdoc />
    public override byte[]? CompressUnit(ReadOnlySpan<byte> unit) => VmdkGrainCodec.Deflate(unit);

    /// <inheritdoc />
    public override ValueTask WriteCompressedUnitAsync(long offset, ReadOnlyMemory<byte> unit, byte[]? compressed, CancellationToken cancellationToken = default) =>
        WriteCompressedAsync(offset, unit, compressed, cancellationToken);

    /// <inheritdoc />
    public override ValueTask WriteCompressedAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken cancellationToken = default) =>
        WriteCompressedAsync(offset, data, null, cancellationToken);

    /// <summary>
    /// vmdk_co_pwritev_compressed: a write of whole grains; in a compressed extent each grain is
    /// stored compressed (<paramref name="compressed"/> when given, for a single grain), in
    /// other extents the data is written as usual.
    /// </summary>
    public async ValueTask WriteCompressedAsync(long offset, ReadOnlyMemory<byte> data, byte[]? compressed, CancellationToken cancellationToken = default)
    {
        EnsureOpen();
        await _lock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            var extent = FindExtent(offset >> 9) ?? throw Error(Errno.EIO);
            if (extent.IsCompressed && compressed is not null && data.Length <= extent.GrainBytes)
            {
                await WriteCompressedGrainAsync(extent, offset, data, ct: cancellationToken, precompressed: compressed).ConfigureAwait(false);
                await UpdateCidOnceAsync(cancellationToken).ConfigureAwait(false);
            }
            else
            {
                await WriteLockedAsync(offset, data, cancellationToken).ConfigureAwait(false);
            }
        }
        finally
        {
            _lock.Release();
        }
    }

    /// <summary>
    /// The zero-length compressed write qemu-img convert ends with: every extent file grown to
    /// a whole number of sectors (compressed grains end anywhere).
    /// </summary>
    public override async ValueTask EndCompressedWritesAsync(CancellationToken cancellationToken = default)
    {
        EnsureOpen();
        foreach (var file in _extents.Select(e => e.File.Node).Distinct())
            await file.TruncateAsync(file.Length, cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public override async ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags flags = ZeroFlags.None, CancellationToken cancellationToken = default)
    {
        EnsureOpen();
        await _lock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            // bdrv_co_do_pwrite_zeroes: an unaligned head and tail apart from the aligned bulk,
            // each tried as zeroed grains first and written as zeroes if the driver cannot.
            long alignment = Math.Max(1, _extents.Where(e => !e.IsFlat).Select(e => e.GrainBytes).DefaultIfEmpty(1).Max());
            long maxPiece = int.MaxValue / alignment * alignment;
            foreach (var (at, num) in ZeroWritePieces.Split(offset, length, alignment, maxPiece))
            {
                bool done = await ZeroGrainsLockedAsync(at, num, dryRun: true, cancellationToken).ConfigureAwait(false)
                    && await ZeroGrainsLockedAsync(at, num, dryRun: false, cancellationToken).ConfigureAwait(false);
                if (!done)
                {
                    if ((flags & ZeroFlags.NoFallback) != 0) throw Error(Errno.ENOTSUP);
                    var zeroes = new byte[Math.Min(num, ZeroBounceBytes)];
                    for (long p = 0; p < num; p += zeroes.Length)
                        await WriteLockedAsync(at + p, zeroes.AsMemory(0, (int)Math.Min(zeroes.Length, num - p)), cancellationToken).ConfigureAwait(false);
                }
            }
            if ((flags & ZeroFlags.Fua) != 0) await FlushFilesAsync(cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            _lock.Release();
        }
    }

    /// <summary>
    /// vmdk_pwritev with zeroed=true: every grain of the range must be whole and in an extent
    /// with zeroed grains, else false (ENOTSUP). A dry run only checks; the real run sets each
    /// entry to 1. As in QEMU, the CID is renewed after the first grain, dry run or not.
    /// </summary>
    private async ValueTask<bool> ZeroGrainsLockedAsync(long offset, long length, bool dryRun, CancellationToken ct)
    {
        if ((offset + 511) / 512 > _totalSectors) throw Error(Errno.EIO);
        while (length > 0)
        {
            var extent = FindExtent(offset >> 9) ?? throw Error(Errno.EIO);
            long inGrain = extent.OffsetInGrain(offset);
            long n = Math.Min(length, extent.GrainBytes - inGrain);
            VmdkGrain grain;
            if (extent.IsFlat)
            {
                grain = new VmdkGrain(VmdkGrainKind.Allocated, extent.FlatStartOffset, 0, 0, 0);
            }
            else
            {
                grain = await LookupAsync(extent, offset, ct).ConfigureAwait(false) ?? throw Error(Errno.EINVAL);
                if (extent.IsCompressed && grain.Kind == VmdkGrainKind.Allocated)
                {
                    Diagnostics.Error("Could not write to allocated cluster for streamOptimized");
                    throw Error(Errno.EIO);
                }
            }
            if (!extent.HasZeroGrain || inGrain != 0 || n < extent.GrainBytes || grain.TableOffset == 0) return false;
            if (!dryRun && grain.Kind != VmdkGrainKind.Zeroed)
                await RecordGrainsAsync(extent, [grain], _ => 1u, ct).ConfigureAwait(false);
            offset += n;
            length -= n;
            await UpdateCidOnceAsync(ct).ConfigureAwait(false);
        }
        return true;
    }

    /// <summary>
    /// vmdk_write_cid on the first write after opening: a random CID written into the
    /// descriptor (as much of the 10 KiB descriptor area as the file's whole sectors hold; a
    /// descriptor file is rewritten whole, in whole sectors, however long it is, as qemu-io 7.2
    /// does: a 10 KiB cut would break the extent line across it), then a flush.
    /// </summary>
    private async ValueTask UpdateCidOnceAsync(CancellationToken ct)
    {
        if (_cidUpdated) return;
        bool descriptorFile = _descriptorOffset == 0;
        int areaSize = descriptorFile
            ? (int)Math.Min(VmdkDescriptor.MaxDescriptorFileBytes + 1, Math.Max(VmdkDescriptor.DescriptorAreaSize, (File.Length + 511) / 512 * 512))
            : VmdkDescriptor.DescriptorAreaSize;
        long length = Math.Min(areaSize, descriptorFile ? (File.Length + 511) / 512 * 512 : File.Length - _descriptorOffset);
        var area = new byte[areaSize];
        long available = Math.Min(length, File.Length - _descriptorOffset);
        if (available > 0) await File.ReadAsync(_descriptorOffset, area.AsMemory(0, (int)available), ct).ConfigureAwait(false);
        uint cid = (uint)Random.Shared.NextInt64(0, 1L << 32);
        var updated = VmdkDescriptor.WithCid(area, cid, areaSize) ?? throw Error(Errno.EINVAL);
        await File.WriteAsync(_descriptorOffset, updated.AsMemory(0, (int)Math.Max(0, length)), WriteFlags.None, ct).ConfigureAwait(false);
        await File.FlushAsync(ct).ConfigureAwait(false);
        _cidUpdated = true;
    }

    /// <inheritdoc />
    public override ValueTask DiscardAsync(long offset, long length, CancellationToken cancellationToken = default)
    {
        // vmdk has no discard: the request ends here, as in QEMU.
        EnsureOpen();
        return ValueTask.CompletedTask;
    }

    /// <inheritdoc />
    public override async ValueTask FlushAsync(CancellationToken cancellationToken = default)
    {
        if (IsReadOnly) return;
        await _lock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            await FlushFilesAsync(cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            _lock.Release();
        }
    }

    private async ValueTask FlushFilesAsync(CancellationToken ct)
    {
        foreach (var child in Children)
            if (child.Name != "backing") await child.Node.FlushAsync(ct).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public override async ValueTask<BlockStatus> GetBlockStatusAsync(long offset, long length, CancellationToken cancellationToken = default)
    {
        EnsureOpen();
        var extent = FindExtent(offset >> 9) ?? throw Error(Errno.EIO);
        Run run;
        await _lock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            run = await MapRunLockedAsync(extent, offset, Math.Min(length, Length - offset), cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            _lock.Release();
        }
        if (run.Failed) throw Error(Errno.EIO);
        var file = extent.File.Node;
        switch (run.Kind)
        {
            case VmdkGrainKind.Zeroed:
                return new BlockStatus(run.Bytes, BlockStatusFlags.Zero | BlockStatusFlags.Allocated);
            case VmdkGrainKind.Unallocated:
                return new BlockStatus(run.Bytes, BlockStatusFlags.None);
            case VmdkGrainKind.Allocated when extent.IsCompressed:
                return new BlockStatus(run.Bytes, BlockStatusFlags.Data | BlockStatusFlags.Allocated);
            case VmdkGrainKind.Allocated when extent.IsFlat:
                // BDRV_BLOCK_RECURSE: the flat file says where it has holes.
                long fileLength = file.Length;
                if (run.HostOffset >= fileLength)
                    return new BlockStatus(run.Bytes, BlockStatusFlags.Data | BlockStatusFlags.Zero | BlockStatusFlags.Allocated, run.HostOffset, file);
                var inner = await file.GetBlockStatusAsync(run.HostOffset, run.Bytes, cancellationToken).ConfigureAwait(false);
                bool zero = (inner.Flags & BlockStatusFlags.Zero) != 0;
                long bytes = Math.Min(run.Bytes, inner.Length);
                // A hole that runs to the end of the file covers the rest of the request.
                if (zero && run.HostOffset + bytes >= fileLength) bytes = run.Bytes;
                return new BlockStatus(bytes, BlockStatusFlags.Data | BlockStatusFlags.Allocated | (zero ? BlockStatusFlags.Zero : 0), run.HostOffset, file);
            default:
                return new BlockStatus(run.Bytes, BlockStatusFlags.Data | BlockStatusFlags.Allocated, run.HostOffset, file);
        }
    }
}
