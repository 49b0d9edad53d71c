using System.Buffers.Binary;
using Vdisk.Graph;
using Vdisk.Native;

namespace Vdisk.Drivers.Qcow2;

public sealed partial class Qcow2Node
{
    /// <summary>
    /// How a run of guest bytes is stored: one kind, contiguous on the host where that matters.
    /// <c>PreallocatedZeroes</c>: a write's in-place run that covers preallocated zero clusters
    /// whole (their entries lose the zero flag once the data is written).
    /// </summary>
    private readonly record struct Mapping(Qcow2ClusterKind Kind, long HostOffset, long Bytes, L2Entry Entry, bool PreallocatedZeroes = false);

    /// <summary>A decompressed cluster and the L2 entry it came from; immutable, so one reference swap publishes both.</summary>
    private sealed record DecompressedCluster(ulong Raw, byte[] Data);

    /// <summary>
    /// The last decompressed cluster. Concurrent reads (an NBD export runs many at once) use it
    /// outside the lock: it is read and replaced as one reference, never field by field, so a
    /// reader can never pair one cluster's entry with another cluster's bytes.
    /// </summary>
    private DecompressedCluster? _lastDecompressed;

    /// <summary>
    /// A request that owns a guest range while it works without the lock: other requests that
    /// would change the range's L2 entries wait for <see cref="Done"/> (QEMU's cluster_allocs and
    /// handle_dependencies).
    /// </summary>
    private class InFlightAllocation(long guestStart, int length)
    {
        public long GuestStart { get; } = guestStart;
        public int Length { get; } = length;
        public TaskCompletionSource Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    /// <summary>Allocating writes between choosing their host clusters and linking them; guarded by the lock.</summary>
    private readonly List<InFlightAllocation> _allocations = [];

    /// <summary>An in-flight allocation whose clusters overlap [start, end), or null.</summary>
    private InFlightAllocation? OverlappingAllocation(long start, long end)
    {
        foreach (var a in _allocations)
        {
            long aStart = _g.ClusterStart(a.GuestStart);
            long aEnd = _g.ClusterStart(a.GuestStart + a.Length + _g.ClusterSize - 1);
            if (start < aEnd && aStart < end) return a;
        }
        return null;
    }

    /// <summary>
    /// Takes the lock once no allocating write overlapping [start, end) is in flight: for requests
    /// that change L2 entries themselves (zeroes, discards, compressed writes) and, over the whole
    /// image, for operations that rework the metadata (snapshots, resize, amend, check, close).
    /// </summary>
    private async ValueTask LockWithoutAllocationsAsync(long start, long end, CancellationToken ct)
    {
        while (true)
        {
            await _lock.WaitAsync(ct).ConfigureAwait(false);
            var pending = OverlappingAllocation(start, end);
            if (pending is null) return;
            _lock.Release();
            await pending.Done.Task.WaitAsync(ct).ConfigureAwait(false);
        }
    }

    /// <summary><see cref="LockWithoutAllocationsAsync"/> over the whole image.</summary>
    private ValueTask LockQuiescedAsync(CancellationToken ct = default) => LockWithoutAllocationsAsync(0, long.MaxValue, ct);

    /// <summary>The entry's cluster kind in this image (offset 0 is valid in an external data file).</summary>
    private Qcow2ClusterKind KindOf(L2Entry entry) => entry.KindWith(HasExternalDataFile);

    private static L2Entry EntryAt(CachedTable table, int index) => new(BinaryPrimitives.ReadUInt64BigEndian(table.Data.AsSpan(index * 8)));

    private static void SetEntry(CachedTable table, int index, L2Entry entry)
    {
        BinaryPrimitives.WriteUInt64BigEndian(table.Data.AsSpan(index * 8), entry.Raw);
        table.Dirty = true;
    }

    /// <summary>
    /// qcow2_get_host_offset: the mapping at <paramref name="offset"/>, for at most <paramref name="maxBytes"/>.
    /// <paramref name="forWrite"/> checks the entry as a write does (handle_copied): only a cluster the
    /// write would go into in place must be aligned; any other is replaced and its old offset freed.
    /// </summary>
    private async ValueTask<Mapping> MapLockedAsync(long offset, long maxBytes, bool forWrite = false)
    {
        long l1Index = _g.L1Index(offset);
        long tableEnd = (l1Index + 1) * _g.BytesPerL2Table;
        long limit = Math.Min(offset + maxBytes, tableEnd);
        if (l1Index >= _l1.Length) return new(Qcow2ClusterKind.Unallocated, 0, limit - offset, default);
        long l2Offset = await L2TableOffsetAsync(l1Index).ConfigureAwait(false);
        if (l2Offset == 0) return new(Qcow2ClusterKind.Unallocated, 0, limit - offset, default);
        var table = await _l2Cache.GetAsync(l2Offset).ConfigureAwait(false);
        int index = _g.L2Index(offset);
        var entry = EntryAt(table, index);
        var kind = KindOf(entry);
        long inCluster = _g.OffsetInCluster(offset);
        long bytes = Math.Min(_g.ClusterSize - inCluster, limit - offset);
        // A v2 image has no zero flag: an entry with it is corruption, not zeroes (qcow2_get_host_offset).
        if (_header.Version < 3 && kind is Qcow2ClusterKind.ZeroPlain or Qcow2ClusterKind.ZeroAllocated)
            await SignalCorruptionAsync($"Zero cluster entry found in pre-v3 image (L2 offset: {Hex(l2Offset)}, L2 index: {Hex(index)})").ConfigureAwait(false);
        bool unaligned = kind is Qcow2ClusterKind.Normal or Qcow2ClusterKind.ZeroAllocated && (entry.Raw & (ulong)(_g.ClusterSize - 1) & L2Entry.OffsetMask) != 0;
        if (unaligned && !forWrite)
            await SignalCorruptionAsync($"Cluster allocation offset {Hex(entry.HostOffset)} unaligned (L2 offset: {Hex(l2Offset)}, L2 index: {Hex(index)})").ConfigureAwait(false);
        if (unaligned && entry.IsCopied)
            await SignalCorruptionAsync($"{(kind == Qcow2ClusterKind.ZeroAllocated ? "Preallocated zero" : "Data")} cluster offset {Hex(entry.HostOffset)} unaligned (guest offset: {Hex(offset)})").ConfigureAwait(false);
        bool zeroes = false;
        if (kind != Qcow2ClusterKind.Compressed)
        {
            long expected = entry.HostOffset + _g.ClusterSize;
            for (int i = index + 1; offset + bytes < limit && i < _g.L2Entries; i++)
            {
                var next = EntryAt(table, i);
                // handle_copied: a write goes in place through copied clusters, preallocated zero
                // ones included (here only those it covers whole), as one request.
                if (forWrite && kind == Qcow2ClusterKind.Normal && entry.IsCopied && KindOf(next) == Qcow2ClusterKind.ZeroAllocated
                    && next.IsCopied && next.HostOffset == expected && offset + bytes + _g.ClusterSize <= limit)
                {
                    zeroes = true;
                    expected += _g.ClusterSize;
                    bytes += _g.ClusterSize;
                    continue;
                }
                if (KindOf(next) != kind) break;
                if (kind is Qcow2ClusterKind.Normal or Qcow2ClusterKind.ZeroAllocated)
                {
                    if (next.HostOffset != expected || next.IsCopied != entry.IsCopied) break;
                    expected += _g.ClusterSize;
                }
                bytes += Math.Min(_g.ClusterSize, limit - (offset + bytes));
            }
        }
        long host = kind is Qcow2ClusterKind.Normal or Qcow2ClusterKind.ZeroAllocated ? entry.HostOffset + inCluster : 0;
        return new(kind, host, bytes, entry, zeroes);
    }

    /// <summary>The L2 table offset of an L1 entry; an unaligned one is corruption (signalled, EIO).</summary>
    private async ValueTask<long> L2TableOffsetAsync(long l1Index)
    {
        ulong entry = _l1[l1Index];
        long offset = (long)(entry & L2Entry.OffsetMask);
        if ((offset & (_g.ClusterSize - 1)) != 0)
            await SignalCorruptionAsync($"L2 table offset {Hex(offset)} unaligned (L1 index: {Hex(l1Index)})").ConfigureAwait(false);
        return offset;
    }

    /// <summary>C's <c>%#x</c>: "0x" and lower-case hex digits, but plain "0" for zero (QEMU's messages use it).</summary>
    internal static string Hex(long value) => value == 0 ? "0" : "0x" + value.ToString("x", System.Globalization.CultureInfo.InvariantCulture);

    /// <inheritdoc />
    public override async ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        EnsureUsable();
        if (IsEncrypted && !IsSectorAligned(offset, buffer.Length))
        {
            await ReadUnalignedAsync(offset, buffer, cancellationToken).ConfigureAwait(false);
            return;
        }
        long pos = 0;
        while (pos < buffer.Length)
        {
            Mapping m;
            await _lock.WaitAsync(cancellationToken).ConfigureAwait(false);
            try
            {
                m = await MapLockedAsync(offset + pos, buffer.Length - pos).ConfigureAwait(false);
                if (m.Kind is Qcow2ClusterKind.Normal or Qcow2ClusterKind.Compressed) Interlocked.Increment(ref _inflight);
            }
            finally
            {
                _lock.Release();
            }
            var segment = buffer.Slice((int)pos, (int)m.Bytes);
            switch (m.Kind)
            {
                case Qcow2ClusterKind.Unallocated:
                    if (Backing is not null) await File.DebugEventAsync(BlkdebugEvent.ReadBackingAio).ConfigureAwait(false);
                    await ReadBackingAsync(offset + pos, segment, cancellationToken).ConfigureAwait(false);
                    break;
                case Qcow2ClusterKind.ZeroPlain:
                case Qcow2ClusterKind.ZeroAllocated:
                    segment.Span.Clear();
                    break;
                case Qcow2ClusterKind.Normal:
                    try
                    {
                        await File.DebugEventAsync(BlkdebugEvent.ReadAio).ConfigureAwait(false);
                        await DataFile.ReadAsync(m.HostOffset, segment, cancellationToken).ConfigureAwait(false);
                        DecryptAfterRead(offset + pos, m.HostOffset, segment.Span);
                    }
                    finally
                    {
                        Interlocked.Decrement(ref _inflight);
                    }
                    break;
                case Qcow2ClusterKind.Compressed:
                    try
                    {
                        var cluster = await DecompressAsync(m.Entry, cancellationToken).ConfigureAwait(false);
                        cluster.AsSpan((int)_g.OffsetInCluster(offset + pos), segment.Length).CopyTo(segment.Span);
                    }
                    finally
                    {
                        Interlocked.Decrement(ref _inflight);
                    }
                    break;
            }
            pos += m.Bytes;
        }
    }

    /// <summary>Reads from the backing chain; zeroes where there is none or it is shorter.</summary>
    private async ValueTask ReadBackingAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken)
    {
        var backing = Backing;
        long available = backing is null ? 0 : Math.Clamp(backing.Length - offset, 0, buffer.Length);
        if (available > 0) await backing!.ReadAsync(offset, buffer[..(int)available], cancellationToken).ConfigureAwait(false);
        buffer.Span[(int)available..].Clear();
    }

    private async ValueTask<byte[]> DecompressAsync(L2Entry entry, CancellationToken cancellationToken)
    {
        var last = Volatile.Read(ref _lastDecompressed);
        if (last is not null && last.Raw == entry.Raw) return last.Data;
        long hostOffset = entry.CompressedHostOffset(_g);
        int length = entry.CompressedSectors(_g) * 512 - (int)(hostOffset & 511);
        var compressed = new byte[length];
        await File.DebugEventAsync(BlkdebugEvent.ReadCompressed).ConfigureAwait(false);
        await File.ReadAsync(hostOffset, compressed, cancellationToken).ConfigureAwait(false);
        var cluster = new byte[_g.ClusterSize];
        if (!Qcow2Compression.TryDecompress(_header.CompressionType, compressed, cluster))
            throw new NativeIOException(Errno.EIO, NativeIOException.Describe(Errno.EIO), Filename);
        Volatile.Write(ref _lastDecompressed, new DecompressedCluster(entry.Raw, cluster));
        return cluster;
    }

    /// <summary>Old contents of part of a guest cluster (for copy-on-write of partial writes).</summary>
    private async ValueTask ReadOldAsync(L2Entry entry, long clusterGuestOffset, int offsetInCluster, Memory<byte> destination, CancellationToken ct)
    {
        switch (KindOf(entry))
        {
            case Qcow2ClusterKind.Unallocated:
                await ReadBackingAsync(clusterGuestOffset + offsetInCluster, destination, ct).ConfigureAwait(false);
                break;
            case Qcow2ClusterKind.Normal:
                await DataFile.ReadAsync(entry.HostOffset + offsetInCluster, destination, ct).ConfigureAwait(false);
                DecryptAfterRead(clusterGuestOffset + offsetInCluster, entry.HostOffset + offsetInCluster, destination.Span);
                break;
            case Qcow2ClusterKind.Compressed:
                var data = await DecompressAsync(entry, ct).ConfigureAwait(false);
                data.AsSpan(offsetInCluster, destination.Length).CopyTo(destination.Span);
                break;
            default:
                destination.Span.Clear();
                break;
        }
    }

    private void EnsureWritable()
    {
        ObjectDisposedException.ThrowIf(_closed, this);
        EnsureUsable();
        if (IsReadOnly) throw new NativeIOException(Errno.EPERM, NativeIOException.Describe(Errno.EPERM), Filename);
        if (IsCorrupt && (_openFlags & Permissions.OpenFlags.Check) == 0)
            throw new NativeIOException(Errno.EIO, NativeIOException.Describe(Errno.EIO), Filename);
    }

    /// <inheritdoc />
    public override async ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default)
    {
        EnsureWritable();
        MarkBitmapsDirty(offset, data.Length);
        if (IsEncrypted && !IsSectorAligned(offset, data.Length))
        {
            await WriteUnalignedAsync(offset, data, flags, cancellationToken).ConfigureAwait(false);
            return;
        }
        long pos = 0;
        // Where the part written in place just ended: new clusters go there if free (handle_alloc's host_offset).
        long contiguousHost = -1;
        while (pos < data.Length)
        {
            await _lock.WaitAsync(cancellationToken).ConfigureAwait(false);
            Mapping m;
            AllocatingWrite? allocation = null;
            InFlightAllocation? dependency = null, zeroRun = null;
            try
            {
                await PrepareForWritesLockedAsync().ConfigureAwait(false);
                m = await MapLockedAsync(offset + pos, data.Length - pos, forWrite: true).ConfigureAwait(false);
                if (m.Kind != Qcow2ClusterKind.Normal || !m.Entry.IsCopied)
                {
                    dependency = OverlappingAllocation(_g.ClusterStart(offset + pos), _g.ClusterStart(offset + pos) + _g.ClusterSize);
                    if (dependency is null)
                    {
                        try
                        {
                            allocation = await BeginAllocatingWriteLockedAsync(offset + pos, data.Length - pos, contiguousHost).ConfigureAwait(false);
                        }
                        catch (NativeIOException) when (_refcounts.TakeFoundCorruption() is { } corruption)
                        {
                            await SignalCorruptionAsync(corruption).ConfigureAwait(false);
                        }
                    }
                }
                else
                {
                    if (m.PreallocatedZeroes)
                    {
                        // Their entries change after the data: the clusters count as in flight until then.
                        dependency = OverlappingAllocation(_g.ClusterStart(offset + pos), offset + pos + m.Bytes);
                        if (dependency is null) _allocations.Add(zeroRun = new InFlightAllocation(offset + pos, (int)m.Bytes));
                    }
                    if (dependency is null)
                    {
                        if (_dataChild is null) await CheckMetadataOverlapAsync(m.HostOffset, m.Bytes).ConfigureAwait(false);
                        Interlocked.Increment(ref _inflight);
                    }
                }
            }
            finally
            {
                _lock.Release();
            }
            if (dependency is not null)
            {
                // Another write is filling this cluster: once it is linked, the cluster is looked up again.
                await dependency.Done.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
                contiguousHost = -1;
                continue;
            }
            if (allocation is not null)
            {
                contiguousHost = -1;
                pos += await FinishAllocatingWriteAsync(allocation, data[(int)pos..], cancellationToken).ConfigureAwait(false);
                continue;
            }
            try
            {
                await File.DebugEventAsync(BlkdebugEvent.WriteAio).ConfigureAwait(false);
                await DataFile.WriteAsync(m.HostOffset, EncryptForWrite(offset + pos, m.HostOffset, data.Slice((int)pos, (int)m.Bytes)), WriteFlags.None, cancellationToken).ConfigureAwait(false);
                _dataSinceSync = true;
                if (zeroRun is not null) await ClearZeroFlagsAsync(offset + pos, m.Bytes).ConfigureAwait(false);
            }
            finally
            {
                Interlocked.Decrement(ref _inflight);
                if (zeroRun is not null) await ForgetInFlightAsync(zeroRun).ConfigureAwait(false);
            }
            pos += m.Bytes;
            contiguousHost = m.HostOffset + m.Bytes;
        }
        Volatile.Write(ref _lastDecompressed, null);
        if ((flags & WriteFlags.Fua) != 0) await FlushAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Written in place, the preallocated zero clusters of [start, start+length) become data clusters.</summary>
    private async ValueTask ClearZeroFlagsAsync(long start, long length)
    {
        await _lock.WaitAsync(CancellationToken.None).ConfigureAwait(false);
        try
        {
            var table = await GetL2ForWriteLockedAsync(_g.L1Index(start)).ConfigureAwait(false);
            for (long c = _g.ClusterStart(start); c < start + length; c += _g.ClusterSize)
            {
                int index = _g.L2Index(c);
                var entry = EntryAt(table, index);
                if (KindOf(entry) == Qcow2ClusterKind.ZeroAllocated && entry.IsCopied) SetEntry(table, index, L2Entry.Allocated(entry.HostOffset));
            }
        }
        finally
        {
            _lock.Release();
        }
    }

    private async ValueTask ForgetInFlightAsync(InFlightAllocation allocation)
    {
        await _lock.WaitAsync(CancellationToken.None).ConfigureAwait(false);
        _allocations.Remove(allocation);
        _lock.Release();
        allocation.Done.TrySetResult();
    }

    /// <summary>
    /// A write into clusters that need a new host cluster (unallocated, zero, compressed, shared)
    /// or into a preallocated zero cluster, between choosing its host clusters and linking them
    /// into the L2 table (QEMU's QCowL2Meta). Its guest clusters are in <see cref="_allocations"/>
    /// meanwhile, so no other request changes their entries.
    /// </summary>
    private sealed class AllocatingWrite(long offset, int consumed, long host, int count, bool reuse, L2Entry first, L2Entry last)
        : InFlightAllocation(offset, consumed)
    {
        public long Host { get; } = host;
        public int Count { get; } = count;
        public bool Reuse { get; } = reuse;
        /// <summary>The old entries of the first and last cluster: where the copy-on-write reads.</summary>
        public L2Entry First { get; } = first;
        public L2Entry Last { get; } = last;
    }

    /// <summary>
    /// qcow2_alloc_host_offset for clusters that need one: allocates a contiguous run (stopping
    /// before a cluster another write is filling), checks it against the metadata, and registers
    /// the write as in flight. The data I/O and the L2 update happen in
    /// <see cref="FinishAllocatingWriteAsync"/>, the data part without the lock.
    /// </summary>
    private async ValueTask<AllocatingWrite> BeginAllocatingWriteLockedAsync(long offset, long length, long contiguousHost = -1)
    {
        int cs = _g.ClusterSize;
        long l1Index = _g.L1Index(offset);
        var table = await GetL2ForWriteLockedAsync(l1Index).ConfigureAwait(false);
        long tableEnd = (l1Index + 1) * _g.BytesPerL2Table;
        long end = Math.Min(offset + length, tableEnd);
        long clusterStart = _g.ClusterStart(offset);
        int index = _g.L2Index(offset);
        var first = EntryAt(table, index);
        bool reuse = KindOf(first) == Qcow2ClusterKind.ZeroAllocated && first.IsCopied;
        long maxClusters = Math.Max(1, (32L << 20) >> _g.ClusterBits);
        int count = 1;
        if (!reuse)
        {
            while (clusterStart + (long)count * cs < end && count < maxClusters)
            {
                long next = clusterStart + (long)count * cs;
                var e = EntryAt(table, index + count);
                if (e.IsCopied && KindOf(e) is Qcow2ClusterKind.Normal or Qcow2ClusterKind.ZeroAllocated) break;
                if (OverlappingAllocation(next, next + cs) is not null) break;
                count++;
            }
        }
        // An external data file keeps each cluster at its guest offset, outside the refcounts.
        long host;
        if (reuse) host = first.HostOffset;
        else if (HasExternalDataFile) host = clusterStart;
        else if (contiguousHost >= 0 && await _refcounts.AllocateAtAsync(contiguousHost, count).ConfigureAwait(false) is > 0 and var extended)
        {
            // Right after the clusters this request just wrote in place, as far as they are free.
            host = contiguousHost;
            count = (int)extended;
        }
        else host = await _refcounts.AllocateAsync(count, orderedAtLink: true).ConfigureAwait(false);
        long runEnd = clusterStart + (long)count * cs;
        int consumed = (int)(Math.Min(end, runEnd) - offset);
        var last = EntryAt(table, index + count - 1);
        if (!HasExternalDataFile) await CheckMetadataOverlapAsync(host, (long)count * cs).ConfigureAwait(false);
        var write = new AllocatingWrite(offset, consumed, host, count, reuse, first, last);
        _allocations.Add(write);
        return write;
    }

    /// <summary>
    /// The rest of an allocating write: the data with the old contents around it (copy-on-write),
    /// without the lock, as QEMU's perform_cow runs with its lock dropped; then, locked, the L2
    /// entries pointed at the new clusters and the old ones queued for freeing. A failure gives the
    /// new clusters back (qcow2_alloc_cluster_abort). Returns the bytes consumed.
    /// </summary>
    private async ValueTask<int> FinishAllocatingWriteAsync(AllocatingWrite write, ReadOnlyMemory<byte> data, CancellationToken ct)
    {
        int cs = _g.ClusterSize;
        long clusterStart = _g.ClusterStart(write.GuestStart);
        long runEnd = clusterStart + (long)write.Count * cs;
        int head = (int)(write.GuestStart - clusterStart);
        int tail = (int)(runEnd - write.GuestStart - write.Length);
        bool linked = false;
        // The old clusters the copy-on-write reads must not be freed while it reads them.
        Interlocked.Increment(ref _inflight);
        bool reading = true;
        try
        {
            if (head == 0 && tail == 0)
            {
                await File.DebugEventAsync(BlkdebugEvent.WriteAio).ConfigureAwait(false);
                await DataFile.WriteAsync(write.Host, EncryptForWrite(write.GuestStart, write.Host, data[..write.Length]), WriteFlags.None, ct).ConfigureAwait(false);
            }
            else
            {
                var buffer = new byte[(long)write.Count * cs];
                await File.DebugEventAsync(BlkdebugEvent.CowRead).ConfigureAwait(false);
                // do_perform_cow_read: a node made unusable meanwhile (a fatal corruption) is not read.
                EnsureUsable();
                if (head > 0) await ReadOldAsync(write.First, clusterStart, 0, buffer.AsMemory(0, head), ct).ConfigureAwait(false);
                data.Span[..write.Length].CopyTo(buffer.AsSpan(head));
                if (tail > 0)
                    await ReadOldAsync(write.Last, runEnd - cs, cs - tail, buffer.AsMemory(buffer.Length - tail), ct).ConfigureAwait(false);
                if (IsEncrypted) Crypto.Encrypt(CryptOffset(clusterStart, write.Host), buffer);
                await File.DebugEventAsync(BlkdebugEvent.WriteAio).ConfigureAwait(false);
                await DataFile.WriteAsync(write.Host, buffer, WriteFlags.None, ct).ConfigureAwait(false);
            }
            _dataSinceSync = true;
            // Read and written: the clusters it replaces may be freed (and reused) as it links its own.
            Interlocked.Decrement(ref _inflight);
            reading = false;

            await _lock.WaitAsync(CancellationToken.None).ConfigureAwait(false);
            try
            {
                // Looked up again: the table may have been written back, or copied for a snapshot, meanwhile.
                var table = await GetL2ForWriteLockedAsync(_g.L1Index(clusterStart)).ConfigureAwait(false);
                // The table points at the new clusters from here: their raised refcounts go first.
                if (!write.Reuse && !HasExternalDataFile) await BeforeRefcountIncreaseAsync().ConfigureAwait(false);
                int index = _g.L2Index(clusterStart);
                for (int i = 0; i < write.Count; i++)
                {
                    var old = EntryAt(table, index + i);
                    SetEntry(table, index + i, L2Entry.Allocated(write.Host + (long)i * cs));
                    if (!write.Reuse) await FreeAnyClusterAsync(old, discard: false).ConfigureAwait(false);
                }
                _allocations.Remove(write);
                linked = true;
            }
            finally
            {
                _lock.Release();
            }
            return write.Length;
        }
        finally
        {
            if (reading) Interlocked.Decrement(ref _inflight);
            if (!linked) await AbandonAllocationAsync(write).ConfigureAwait(false);
            write.Done.TrySetResult();
        }
    }

    /// <summary>qcow2_alloc_cluster_abort: new clusters that never got linked go back to the free pool.</summary>
    private async ValueTask AbandonAllocationAsync(AllocatingWrite write)
    {
        await _lock.WaitAsync(CancellationToken.None).ConfigureAwait(false);
        try
        {
            if (!write.Reuse && !HasExternalDataFile && !_unusable)
            {
                try
                {
                    await _refcounts.ChangeAsync(write.Host, (long)write.Count * _g.ClusterSize, -1).ConfigureAwait(false);
                }
                catch (IOException)
                {
                    // The clusters leak; check -r leaks reclaims them, as with QEMU.
                }
            }
        }
        finally
        {
            _allocations.Remove(write);
            _lock.Release();
        }
    }

    /// <summary>The L2 table for <paramref name="l1Index"/>, allocated or copied (when shared with a snapshot) so it can be changed.</summary>
    private async ValueTask<CachedTable> GetL2ForWriteLockedAsync(long l1Index)
    {
        ulong l1Entry = _l1[l1Index];
        long oldOffset = await L2TableOffsetAsync(l1Index).ConfigureAwait(false);
        if (oldOffset != 0 && (l1Entry & L2Entry.CopiedFlag) != 0) return await _l2Cache.GetAsync(oldOffset).ConfigureAwait(false);
        byte[]? initial = null;
        if (oldOffset != 0) initial = (await _l2Cache.GetAsync(oldOffset).ConfigureAwait(false)).Data.ToArray();
        long newOffset = await _refcounts.AllocateAsync(1).ConfigureAwait(false);
        if (newOffset == 0) await SignalCorruptionAsync("Preventing invalid allocation of L2 table at offset 0").ConfigureAwait(false);
        await CheckMetadataOverlapAsync(newOffset, _g.ClusterSize).ConfigureAwait(false);
        // l2_allocate writes the refcounts out before the table, lazy refcounts or not.
        if (!NeedAccurateRefcounts) await WriteRefcountsDurablyAsync().ConfigureAwait(false);
        var table = await _l2Cache.CreateAsync(newOffset, initial).ConfigureAwait(false);
        _l1[l1Index] = (ulong)newOffset | L2Entry.CopiedFlag;
        _l1Dirty = true;
        if (oldOffset != 0) await FreeLockedAsync(new(oldOffset, _g.ClusterSize, false)).ConfigureAwait(false);
        return table;
    }

    /// <summary>qcow2_free_any_cluster: releases what an overwritten or discarded L2 entry referenced.</summary>
    private async ValueTask FreeAnyClusterAsync(L2Entry old, bool discard)
    {
        switch (KindOf(old))
        {
            case Qcow2ClusterKind.Normal:
            case Qcow2ClusterKind.ZeroAllocated:
                // qcow2_free_any_cluster: a data file cluster has no refcount; it is only discarded.
                if (HasExternalDataFile)
                {
                    if (discard) await FreeLockedAsync(new(old.HostOffset, _g.ClusterSize, discard, InDataFile: true)).ConfigureAwait(false);
                }
                else if (_g.OffsetInCluster(old.HostOffset) != 0)
                {
                    // Which cluster was meant is unknown: none is freed, and the request goes on.
                    await ReportCorruptionAsync($"Cannot free unaligned cluster {Hex(old.HostOffset)}", fatal: false).ConfigureAwait(false);
                }
                else if (await RefcountsReachableAsync(old.HostOffset, _g.ClusterSize).ConfigureAwait(false))
                {
                    await FreeLockedAsync(new(old.HostOffset, _g.ClusterSize, discard)).ConfigureAwait(false);
                }
                break;
            case Qcow2ClusterKind.Compressed:
                var (start, length) = old.CompressedHostRange(_g);
                if (await RefcountsReachableAsync(start, length).ConfigureAwait(false)) await FreeLockedAsync(new(start, length, discard)).ConfigureAwait(false);
                break;
        }
    }

    /// <summary>
    /// A free may wait for reads in flight, but QEMU's qcow2_free_clusters looks the refcounts up
    /// at once: a refcount block it cannot use (an unaligned one) is signalled now, and that free
    /// is reported failed and dropped (the cluster leaks), as QEMU reports it.
    /// </summary>
    private async ValueTask<bool> RefcountsReachableAsync(long offset, long length)
    {
        try
        {
            for (long c = offset >> _g.ClusterBits; c <= (offset + length - 1) >> _g.ClusterBits; c++)
                await _refcounts.GetAsync(c).ConfigureAwait(false);
            return true;
        }
        catch (NativeIOException) when (_refcounts.TakeFoundCorruption() is { } corruption)
        {
            await ReportCorruptionAsync(corruption).ConfigureAwait(false);
            Diagnostics.Report($"qcow2_free_clusters failed: {NativeIOException.Describe(Errno.EIO)}");
            return false;
        }
    }

    /// <summary>Before the first change: sets the dirty bit (lazy refcounts) and drops autoclear bits vdisk does not maintain.</summary>
    private async ValueTask PrepareForWritesLockedAsync()
    {
        if (_preparedForWrites) return;
        // A node opened read-only and reopened read-write marks its bitmaps in use now.
        await MarkBitmapsInUseAsync(CancellationToken.None).ConfigureAwait(false);
        // data-file-raw is kept up to date by every write, the bitmaps by closing; the other bits vdisk does not maintain.
        ulong keep = _header.AutoclearFeatures & (Qcow2Features.AutoclearDataFileRaw | Qcow2Features.AutoclearBitmaps);
        if (_header.Version >= 3 && _header.AutoclearFeatures != keep) await WriteAutoclearFeaturesAsync(keep, CancellationToken.None).ConfigureAwait(false);
        if (_header.Version >= 3 && UseLazyRefcounts && (_header.IncompatibleFeatures & Qcow2Features.IncompatDirty) == 0)
        {
            await SetIncompatibleFeaturesAsync(_header.IncompatibleFeatures | Qcow2Features.IncompatDirty).ConfigureAwait(false);
            _markedDirty = true;
        }
        _preparedForWrites = true;
    }

    /// <summary>Rewrites the autoclear feature field alone and syncs.</summary>
    private async ValueTask WriteAutoclearFeaturesAsync(ulong value, CancellationToken ct)
    {
        _header.AutoclearFeatures = value;
        var field = new byte[8];
        BinaryPrimitives.WriteUInt64BigEndian(field, value);
        await File.WriteAsync(88, field, WriteFlags.None, ct).ConfigureAwait(false);
        await SyncFileAsync().ConfigureAwait(false);
    }

    /// <summary>
    /// qcow2_need_accurate_refcounts: while the dirty bit is set (lazy refcounts), refcount blocks
    /// need not reach the file before the tables that use them; opening repairs them after a crash.
    /// </summary>
    private bool NeedAccurateRefcounts => (_header.IncompatibleFeatures & Qcow2Features.IncompatDirty) == 0;

    /// <summary>Changed refcount blocks written and synced.</summary>
    private async ValueTask WriteRefcountsDurablyAsync()
    {
        if (!_refcounts.IsDirty) return;
        await _refcounts.WriteBackAsync().ConfigureAwait(false);
        await SyncFileAsync().ConfigureAwait(false);
    }

    /// <summary>Rewrites the incompatible feature field alone and syncs (qcow2_mark_dirty / mark_clean).</summary>
    internal async ValueTask SetIncompatibleFeaturesAsync(ulong value)
    {
        if (_header.Version < 3) return;
        // The dirty bit goes only once the refcounts it excused are on disk (every path that marks clean).
        bool cleaning = !NeedAccurateRefcounts && (value & Qcow2Features.IncompatDirty) == 0;
        if (cleaning && !_unusable) await WriteRefcountsDurablyAsync().ConfigureAwait(false);
        var buf = new byte[8];
        BinaryPrimitives.WriteUInt64BigEndian(buf, value);
        await File.WriteAsync(Qcow2Header.IncompatibleFeaturesOffset, buf).ConfigureAwait(false);
        await SyncFileAsync().ConfigureAwait(false);
        _header.IncompatibleFeatures = value;
    }

    /// <summary>Which metadata writes are checked against (the overlap-check options; QEMU's default is cached).</summary>
    internal Qcow2OverlapChecks OverlapChecks { get; set; } = Qcow2OverlapChecks.Cached;

    /// <summary>
    /// qcow2_pre_write_overlap_check for data: a write must never land on the image's metadata
    /// (those <see cref="OverlapChecks"/> selects); one that would marks the image corrupt and fails.
    /// </summary>
    private async ValueTask CheckMetadataOverlapAsync(long offset, long length, Qcow2OverlapChecks ignore = Qcow2OverlapChecks.None)
    {
        var hit = await FindMetadataOverlapAsync(offset, length, OverlapChecks & ~ignore).ConfigureAwait(false);
        if (hit != Qcow2OverlapChecks.None)
            await SignalCorruptionAsync($"Preventing invalid write on metadata (overlaps with {Qcow2OverlapCheckNames.Describe(hit)})").ConfigureAwait(false);
    }

    /// <summary>qcow2_check_metadata_overlap: the first kind of metadata (in QEMU's order) the range overlaps, or None.</summary>
    private async ValueTask<Qcow2OverlapChecks> FindMetadataOverlapAsync(long offset, long length, Qcow2OverlapChecks checks)
    {
        if (length == 0) return Qcow2OverlapChecks.None;
        int cs = _g.ClusterSize;
        if ((checks & Qcow2OverlapChecks.MainHeader) != 0 && offset < cs) return Qcow2OverlapChecks.MainHeader;
        // The range is widened to whole clusters: metadata owns its clusters.
        long start = _g.ClusterStart(offset);
        long size = _g.ClusterStart(offset - start + length + cs - 1);
        bool Hits(long metadataOffset, long metadataLength) => Overlaps(start, size, metadataOffset, metadataLength);

        if ((checks & Qcow2OverlapChecks.ActiveL1) != 0 && _l1.Length > 0 && Hits((long)_header.L1TableOffset, _l1.Length * 8L))
            return Qcow2OverlapChecks.ActiveL1;
        if ((checks & Qcow2OverlapChecks.RefcountTable) != 0 && Hits(_refcounts.TableOffset, (long)_refcounts.TableClusters << _g.ClusterBits))
            return Qcow2OverlapChecks.RefcountTable;
        if ((checks & Qcow2OverlapChecks.SnapshotTable) != 0 && _header.SnapshotCount > 0 &&
            Hits((long)_header.SnapshotsOffset, Qcow2Snapshot.TableSize(_snapshots)))
            return Qcow2OverlapChecks.SnapshotTable;
        if ((checks & Qcow2OverlapChecks.InactiveL1) != 0 && _snapshots.Any(sn => sn.L1Size > 0 && Hits((long)sn.L1TableOffset, sn.L1Size * 8L)))
            return Qcow2OverlapChecks.InactiveL1;
        if ((checks & Qcow2OverlapChecks.ActiveL2) != 0 && Qcow2OverlapScan.AnyEntryOverlaps(_l1, L2Entry.OffsetMask, cs, start, size))
            return Qcow2OverlapChecks.ActiveL2;
        if ((checks & Qcow2OverlapChecks.RefcountBlock) != 0 &&
            Qcow2OverlapScan.AnyEntryOverlaps(_refcounts.UsedTable, Qcow2Refcounts.TableOffsetMask, cs, start, size))
            return Qcow2OverlapChecks.RefcountBlock;
        if ((checks & Qcow2OverlapChecks.InactiveL2) != 0)
        {
            foreach (var snapshot in _snapshots)
            {
                // qcow2_validate_table, then the snapshot's L1 table as it is on disk.
                if (snapshot.L1Size > MaxL1Bytes / 8)
                    throw new NativeIOException(Errno.EFBIG, NativeIOException.Describe(Errno.EFBIG), Filename);
                if (long.MaxValue - snapshot.L1Size * 8L < (long)snapshot.L1TableOffset || _g.OffsetInCluster((long)snapshot.L1TableOffset) != 0)
                    throw new NativeIOException(Errno.EINVAL, NativeIOException.Describe(Errno.EINVAL), Filename);
                var l1 = new byte[snapshot.L1Size * 8];
                await File.ReadAsync((long)snapshot.L1TableOffset, l1).ConfigureAwait(false);
                for (int i = 0; i < l1.Length; i += 8)
                {
                    long l2 = (long)(BinaryPrimitives.ReadUInt64BigEndian(l1.AsSpan(i)) & L2Entry.OffsetMask);
                    if (l2 != 0 && Hits(l2, cs)) return Qcow2OverlapChecks.InactiveL2;
                }
            }
        }
        if ((checks & Qcow2OverlapChecks.BitmapDirectory) != 0 && (_header.AutoclearFeatures & Qcow2Features.AutoclearBitmaps) != 0 &&
            _header.Bitmaps is { } bitmaps && Hits((long)bitmaps.DirectoryOffset, (long)bitmaps.DirectorySize))
            return Qcow2OverlapChecks.BitmapDirectory;
        return Qcow2OverlapChecks.None;
    }

    /// <summary>
    /// Clusters for new metadata (a grown L1 table, a snapshot's L1 table or table, an encryption
    /// header), checked before anything is written there as QEMU checks those writes.
    /// </summary>
    private async ValueTask<long> AllocateMetadataAsync(long clusters)
    {
        long offset = await _refcounts.AllocateAsync(clusters).ConfigureAwait(false);
        await CheckMetadataOverlapAsync(offset, clusters << _g.ClusterBits).ConfigureAwait(false);
        return offset;
    }

    /// <summary>QCOW_MAX_L1_SIZE.</summary>
    private const long MaxL1Bytes = 32L << 20;

    private static bool Overlaps(long a, long alen, long b, long blen) => blen > 0 && a < b + blen && b < a + alen;

    /// <summary>qcow2_signal_corruption, then fail the request with EIO.</summary>
    private async ValueTask SignalCorruptionAsync(string message)
    {
        await ReportCorruptionAsync(message).ConfigureAwait(false);
        throw new NativeIOException(Errno.EIO, NativeIOException.Describe(Errno.EIO), Filename);
    }

    private bool _signaledCorruption;

    /// <summary>
    /// qcow2_signal_corruption: on a writable node the corruption is fatal (the corrupt bit is
    /// set and the node refuses every later request, as QEMU's drops its driver); on a read-only
    /// one it is reported once and requests go on. Printed as QEMU prints it, without a prefix.
    /// </summary>
    private async ValueTask ReportCorruptionAsync(string message, bool fatal = true)
    {
        fatal &= !IsReadOnly;
        if (_signaledCorruption && (!fatal || IsCorrupt)) return;
        Diagnostics.Report(fatal
            ? $"qcow2: Marking image as corrupt: {message}; further corruption events will be suppressed"
            : $"qcow2: Image is corrupt: {message}; further non-fatal corruption events will be suppressed");
        _signaledCorruption = true;
        if (!fatal) return;
        _unusable = true;
        if (_header.Version >= 3)
        {
            try
            {
                await SetIncompatibleFeaturesAsync(_header.IncompatibleFeatures | Qcow2Features.IncompatCorrupt).ConfigureAwait(false);
            }
            catch (IOException)
            {
                // The request fails either way.
            }
        }
        _header.IncompatibleFeatures |= Qcow2Features.IncompatCorrupt;
    }

    /// <summary>Set by a fatal corruption: every later request fails with ENOMEDIUM, as on QEMU's driverless node.</summary>
    private bool _unusable;

    private void EnsureUsable()
    {
        if (_unusable) throw new NativeIOException(Errno.ENOMEDIUM, NativeIOException.Describe(Errno.ENOMEDIUM), Filename);
    }

    /// <inheritdoc />
    public override async ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags flags = ZeroFlags.None, CancellationToken cancellationToken = default)
    {
        EnsureWritable();
        MarkBitmapsDirty(offset, length);
        if (length <= 0) return;
        int cs = _g.ClusterSize;
        long end = offset + length;
        bool unmap = (flags & ZeroFlags.MayUnmap) != 0;
        long pos = offset;
        while (pos < end)
        {
            long clusterStart = _g.ClusterStart(pos);
            long clusterEnd = Math.Min(clusterStart + cs, Length);
            long pieceEnd = Math.Min(end, clusterStart + cs);
            if (pos == clusterStart && pieceEnd >= clusterEnd)
            {
                // Whole clusters from here (the image's last, partial cluster counts as whole).
                long runEnd = end == Length ? end : _g.ClusterStart(end);
                if (!await ZeroClustersAsync(pos, runEnd, unmap, cancellationToken).ConfigureAwait(false))
                    await ZeroFallbackAsync(pos, runEnd - pos, flags, cancellationToken).ConfigureAwait(false);
                pos = runEnd;
                continue;
            }
            // A partial cluster: zero the whole cluster if the rest of it already reads as zero.
            bool rest = _header.Version >= 3
                && await IsZeroAsync(clusterStart, pos - clusterStart, cancellationToken).ConfigureAwait(false)
                && await IsZeroAsync(pieceEnd, clusterEnd - pieceEnd, cancellationToken).ConfigureAwait(false);
            if (!rest || !await ZeroClustersAsync(clusterStart, clusterEnd, unmap: false, cancellationToken, onlyIfUnallocatedOrZero: true).ConfigureAwait(false))
                await ZeroFallbackAsync(pos, pieceEnd - pos, flags, cancellationToken).ConfigureAwait(false);
            pos = pieceEnd;
        }
        if ((flags & ZeroFlags.Fua) != 0) await FlushAsync(cancellationToken).ConfigureAwait(false);
    }

    private async ValueTask ZeroFallbackAsync(long offset, long length, ZeroFlags flags, CancellationToken ct)
    {
        if ((flags & ZeroFlags.NoFallback) != 0)
            throw new NativeIOException(Errno.ENOTSUP, NativeIOException.Describe(Errno.ENOTSUP), Filename);
        var zeroes = new byte[(int)Math.Min(length, 1 << 20)];
        while (length > 0)
        {
            int n = (int)Math.Min(length, zeroes.Length);
            await WriteAsync(offset, zeroes.AsMemory(0, n), WriteFlags.None, ct).ConfigureAwait(false);
            offset += n;
            length -= n;
        }
    }

    /// <summary>True when the range reads as zeroes according to block status (cheap: no data is read).</summary>
    private async ValueTask<bool> IsZeroAsync(long offset, long length, CancellationToken ct)
    {
        if (length <= 0) return true;
        return await BlockChain.IsZeroAsync(this, offset, length, ct).ConfigureAwait(false);
    }

    /// <summary>
    /// zero_in_l2_slice over whole clusters [start, end): sets the zero flag, freeing the host
    /// cluster when unmapping (and always for compressed clusters). v2 images have no zero flag:
    /// without a backing file the clusters are deallocated instead, otherwise this returns false.
    /// </summary>
    private async ValueTask<bool> ZeroClustersAsync(long start, long end, bool unmap, CancellationToken ct, bool onlyIfUnallocatedOrZero = false)
    {
        await LockWithoutAllocationsAsync(start, end, ct).ConfigureAwait(false);
        try
        {
            if (_header.Version < 3)
            {
                if (Backing is not null) return false;
                await PrepareForWritesLockedAsync().ConfigureAwait(false);
                await DiscardClustersLockedAsync(start, end, fullDiscard: false).ConfigureAwait(false);
                return true;
            }
            if (onlyIfUnallocatedOrZero)
            {
                var m = await MapLockedAsync(start, end - start).ConfigureAwait(false);
                if (m.Kind is Qcow2ClusterKind.Normal or Qcow2ClusterKind.Compressed) return false;
            }
            await PrepareForWritesLockedAsync().ConfigureAwait(false);
            // qcow2_subcluster_zeroize: a raw data file must read as the guest does, so it is zeroed first.
            if (HasExternalDataFile && _header.DataFileRaw)
                await DataFile.WriteZeroesAsync(start, end - start, unmap ? ZeroFlags.MayUnmap : ZeroFlags.None, ct).ConfigureAwait(false);
            long pos = start;
            while (pos < end)
            {
                long l1Index = _g.L1Index(pos);
                var table = await GetL2ForWriteLockedAsync(l1Index).ConfigureAwait(false);
                long tableEnd = Math.Min(end, (l1Index + 1) * _g.BytesPerL2Table);
                for (; pos < tableEnd; pos += _g.ClusterSize)
                {
                    int index = _g.L2Index(pos);
                    var old = EntryAt(table, index);
                    bool allocated = KindOf(old) is Qcow2ClusterKind.Normal or Qcow2ClusterKind.Compressed or Qcow2ClusterKind.ZeroAllocated;
                    bool free = KindOf(old) == Qcow2ClusterKind.Compressed || (unmap && allocated);
                    var next = new L2Entry((free ? 0 : old.Raw) | L2Entry.ZeroFlag);
                    if (next == old) continue;
                    SetEntry(table, index, next);
                    if (free) await FreeAnyClusterAsync(old, discard: true).ConfigureAwait(false);
                }
            }
            Volatile.Write(ref _lastDecompressed, null);
            return true;
        }
        finally
        {
            _lock.Release();
        }
    }

    /// <inheritdoc />
    public override async ValueTask DiscardAsync(long offset, long length, CancellationToken cancellationToken = default)
    {
        EnsureWritable();
        MarkBitmapsDirty(offset, length);
        // Without zero clusters (v2), a discard would expose the backing file's stale data.
        if (_header.Version < 3 && Backing is not null) return;
        long end = offset + length;
        long start = _g.ClusterStart(offset + _g.ClusterSize - 1);
        long alignedEnd = _g.ClusterStart(end);
        if (end == Length && end > alignedEnd && start <= alignedEnd) alignedEnd = end;
        if (alignedEnd <= start) return;
        await LockWithoutAllocationsAsync(start, alignedEnd, cancellationToken).ConfigureAwait(false);
        try
        {
            await PrepareForWritesLockedAsync().ConfigureAwait(false);
            await DiscardClustersLockedAsync(start, alignedEnd, fullDiscard: false).ConfigureAwait(false);
        }
        finally
        {
            _lock.Release();
        }
        // bdrv_co_pdiscard sends an unaligned tail as a request of its own, which a node made
        // unusable meanwhile (a fatal corruption while freeing) refuses.
        if (end > alignedEnd) EnsureUsable();
    }

    /// <summary>
    /// discard_in_l2_slice: a discarded cluster reads as zeroes (v3 zero flag), or falls through
    /// to the backing file with <paramref name="fullDiscard"/>; its host cluster is freed.
    /// </summary>
    private ValueTask DiscardClustersLockedAsync(long start, long end, bool fullDiscard) =>
        WithHeldDiscardsAsync(() => DiscardEntriesLockedAsync(start, end, fullDiscard));

    private async ValueTask DiscardEntriesLockedAsync(long start, long end, bool fullDiscard)
    {
        long pos = start;
        while (pos < end)
        {
            long l1Index = _g.L1Index(pos);
            long tableEnd = Math.Min(end, (l1Index + 1) * _g.BytesPerL2Table);
            if (l1Index >= _l1.Length) break;
            // discard_in_l2_slice gets the table as a write does: a range without one gets an
            // (empty) L2 table, as in QEMU, so the image ends where QEMU's does.
            var table = await GetL2ForWriteLockedAsync(l1Index).ConfigureAwait(false);
            for (; pos < tableEnd; pos += _g.ClusterSize)
            {
                int index = _g.L2Index(pos);
                var old = EntryAt(table, index);
                bool allocated = KindOf(old) is Qcow2ClusterKind.Normal or Qcow2ClusterKind.Compressed or Qcow2ClusterKind.ZeroAllocated;
                var next = old;
                if (fullDiscard) next = default;
                else if (Backing is not null || allocated) next = new L2Entry(_header.Version >= 3 ? L2Entry.ZeroFlag : 0);
                if (next == old) continue;
                SetEntry(table, index, next);
                await FreeAnyClusterAsync(old, discard: true).ConfigureAwait(false);
            }
        }
        Volatile.Write(ref _lastDecompressed, null);
    }

    /// <inheritdoc />
    public override async ValueTask FlushAsync(CancellationToken cancellationToken = default)
    {
        if (IsReadOnly) return;
        await File.DebugEventAsync(BlkdebugEvent.FlushToOs).ConfigureAwait(false);
        await _lock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            await FlushLockedAsync(cancellationToken).ConfigureAwait(false);
            await File.DebugEventAsync(BlkdebugEvent.FlushToDisk).ConfigureAwait(false);
        }
        finally
        {
            _lock.Release();
        }
    }

    /// <summary>
    /// Makes everything durable in the crash-safe order: frees that waited for reads applied,
    /// L2 tables (after the raised refcounts they need), sync, L1 table, then the refcount blocks
    /// (after every table that dropped a reference they lowered), sync.
    /// </summary>
    private async ValueTask FlushLockedAsync(CancellationToken ct)
    {
        await IssueHeldDiscardsAsync().ConfigureAwait(false);
        if (_pendingFrees.Count > 0 && Volatile.Read(ref _inflight) == 0) await ApplyPendingFreesLockedAsync(ct).ConfigureAwait(false);
        await _l2Cache.WriteDirtyAsync().ConfigureAwait(false);
        if (_l1Dirty)
        {
            await MakeIncreasesDurableAsync().ConfigureAwait(false);
            await SyncFileAsync().ConfigureAwait(false);
            await WriteL1Async().ConfigureAwait(false);
            _l1Dirty = false;
        }
        if (_refcounts.IsDirty && NeedAccurateRefcounts) await _refcounts.WriteBackAsync().ConfigureAwait(false);
        await SyncFileAsync().ConfigureAwait(false);
        _tablesAwaitRefcounts = false;
        _refcountsAwaitTables = false;
    }

    /// <summary>
    /// Set when a refcount was raised in the cache and not yet written and synced: L2 and L1
    /// tables, which may point at the cluster, are written only after the refcount blocks
    /// (QEMU's l2_table_cache depending on refcount_block_cache). Never set together with
    /// <see cref="_refcountsAwaitTables"/>: setting one makes the other's writes durable first.
    /// </summary>
    private bool _tablesAwaitRefcounts;

    /// <summary>
    /// Set when a refcount was lowered in the cache: the refcount blocks are written only after
    /// every changed L2 table and the L1 table (one of them dropped the reference), so the disk
    /// never holds a reference to a cluster whose refcount is 0 there and which a later
    /// allocation may take (refcount_block_cache depending on l2_table_cache).
    /// </summary>
    private bool _refcountsAwaitTables;

    /// <summary>
    /// A refcount is about to be raised, or a table to point at clusters whose refcount was
    /// raised: lowered ones wait for their tables no longer, then tables wait for the raised ones.
    /// </summary>
    private async ValueTask BeforeRefcountIncreaseAsync()
    {
        if (!NeedAccurateRefcounts) return;
        await WriteTablesBeforeRefcountsAsync().ConfigureAwait(false);
        _tablesAwaitRefcounts = true;
    }

    /// <summary>A refcount is about to be lowered: raised ones are made durable first, then the blocks wait for the tables.</summary>
    private async ValueTask BeforeRefcountDecreaseAsync()
    {
        if (!NeedAccurateRefcounts) return;
        await MakeIncreasesDurableAsync().ConfigureAwait(false);
        _refcountsAwaitTables = true;
    }

    /// <summary>Raised refcounts written and synced, when tables wait for them.</summary>
    private async ValueTask MakeIncreasesDurableAsync()
    {
        if (!_tablesAwaitRefcounts) return;
        await _refcounts.WriteBackAsync().ConfigureAwait(false);
        await SyncFileAsync().ConfigureAwait(false);
        _tablesAwaitRefcounts = false;
    }

    /// <summary>Before a refcount block is written: the tables that dropped references it lowered, written and synced.</summary>
    private async ValueTask WriteTablesBeforeRefcountsAsync()
    {
        if (!_refcountsAwaitTables) return;
        await _l2Cache.WriteDirtyAsync().ConfigureAwait(false);
        if (_l1Dirty)
        {
            await SyncFileAsync().ConfigureAwait(false);
            await WriteL1Async().ConfigureAwait(false);
            _l1Dirty = false;
        }
        await SyncFileAsync().ConfigureAwait(false);
        _refcountsAwaitTables = false;
    }

    /// <summary>
    /// qcow2_free_clusters: the refcount is lowered now, so the freed clusters are the next ones
    /// allocated (QEMU moves free_cluster_index back); the write order above keeps the disk safe.
    /// Only a read in flight outside the lock, which may still be reading an old cluster, makes
    /// the free wait (until the next free or flush without reads in flight).
    /// </summary>
    private async ValueTask FreeLockedAsync(PendingFree free)
    {
        if (Volatile.Read(ref _inflight) != 0)
        {
            _pendingFrees.Add(free);
            return;
        }
        if (_pendingFrees.Count > 0) await ApplyPendingFreesLockedAsync(CancellationToken.None).ConfigureAwait(false);
        await ApplyFreeLockedAsync(free, CancellationToken.None).ConfigureAwait(false);
    }

    private async ValueTask ApplyPendingFreesLockedAsync(CancellationToken ct)
    {
        var frees = _pendingFrees.ToArray();
        _pendingFrees.Clear();
        foreach (var f in frees) await ApplyFreeLockedAsync(f, ct).ConfigureAwait(false);
    }

    /// <summary>
    /// Lowers the refcounts of one freed range; a cluster left unused leaves the L2 cache and,
    /// for a discard, is discarded in the file at once, as QEMU's update_refcount_discard does
    /// (before anything can reuse it).
    /// </summary>
    private async ValueTask ApplyFreeLockedAsync(PendingFree free, CancellationToken ct)
    {
        if (free.InDataFile)
        {
            await DataFile.DiscardAsync(free.Offset, free.Length, ct).ConfigureAwait(false);
            return;
        }
        await File.DebugEventAsync(BlkdebugEvent.ClusterFree).ConfigureAwait(false);
        await _refcounts.ChangeAsync(free.Offset, free.Length, -1).ConfigureAwait(false);
        for (long c = free.Offset >> _g.ClusterBits; c <= (free.Offset + free.Length - 1) >> _g.ClusterBits; c++)
        {
            if (await _refcounts.GetAsync(c).ConfigureAwait(false) != 0) continue;
            _l2Cache.Discard(c << _g.ClusterBits);
            if (free.Discard) await DiscardFreedClusterAsync(c << _g.ClusterBits).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Freed clusters to discard in the file, one range of adjacent ones (update_refcount_discard
    /// merges them); held only while <see cref="_holdDiscards"/> and until the next search for
    /// free clusters, which could otherwise hand one out before its discard.
    /// </summary>
    private (long Offset, long Length) _heldDiscard;

    /// <summary>Set while a discard or zeroing request frees its clusters (QEMU's cache_discards).</summary>
    private bool _holdDiscards;

    private async ValueTask DiscardFreedClusterAsync(long offset)
    {
        if (_heldDiscard.Length > 0 && _heldDiscard.Offset + _heldDiscard.Length == offset)
        {
            _heldDiscard.Length += _g.ClusterSize;
        }
        else
        {
            await IssueHeldDiscardsAsync().ConfigureAwait(false);
            _heldDiscard = (offset, _g.ClusterSize);
        }
        if (!_holdDiscards) await IssueHeldDiscardsAsync().ConfigureAwait(false);
    }

    /// <summary>qcow2_process_discards: the held range discarded in the file.</summary>
    private async ValueTask IssueHeldDiscardsAsync()
    {
        var (offset, length) = _heldDiscard;
        if (length == 0) return;
        _heldDiscard = default;
        await File.DiscardAsync(offset, length).ConfigureAwait(false);
    }

    /// <summary>Runs a request's frees with their file discards merged, issued at its end.</summary>
    private async ValueTask WithHeldDiscardsAsync(Func<ValueTask> frees)
    {
        _holdDiscards = true;
        try
        {
            await frees().ConfigureAwait(false);
        }
        finally
        {
            _holdDiscards = false;
        }
        await IssueHeldDiscardsAsync().ConfigureAwait(false);
    }

    /// <summary>Writes back one L2 table: raised refcounts and data must be on disk before any L2 entry that needs them.</summary>
    private async ValueTask WriteL2BackAsync(CachedTable table)
    {
        if (_tablesAwaitRefcounts) await MakeIncreasesDurableAsync().ConfigureAwait(false);
        else if (_dataSinceSync) await SyncFileAsync().ConfigureAwait(false);
        // qcow2_cache_entry_flush: a table is checked against every other kind of metadata.
        await CheckMetadataOverlapAsync(table.Offset, table.Data.Length, ignore: Qcow2OverlapChecks.ActiveL2).ConfigureAwait(false);
        await File.DebugEventAsync(BlkdebugEvent.L2Update).ConfigureAwait(false);
        await File.WriteAsync(table.Offset, table.Data).ConfigureAwait(false);
    }

    private async ValueTask WriteL1Async()
    {
        await File.DebugEventAsync(BlkdebugEvent.L1Update).ConfigureAwait(false);
        await File.WriteAsync((long)_header.L1TableOffset, SerializeTable(_l1, _l1.Length)).ConfigureAwait(false);
    }

    private async ValueTask WriteRefcountTablePointerAsync(long offset, int clusters)
    {
        var buf = new byte[12];
        BinaryPrimitives.WriteUInt64BigEndian(buf, (ulong)offset);
        BinaryPrimitives.WriteUInt32BigEndian(buf.AsSpan(8), (uint)clusters);
        await File.WriteAsync(Qcow2Header.RefcountTableOffsetOffset, buf).ConfigureAwait(false);
        _header.RefcountTableOffset = (ulong)offset;
        _header.RefcountTableClusters = (uint)clusters;
    }

    /// <summary>
    /// Whether the image looks preallocated with preallocation=metadata (qcow2_detect_metadata_preallocation),
    /// found at the first block-status query of the node: null until then.
    /// </summary>
    private bool? _metadataPreallocation;

    /// <summary>
    /// qcow2_detect_metadata_preallocation: more clusters of the file in use (refcount not 0) than
    /// its allocated bytes can hold (with a ninth and two clusters to spare) means clusters were
    /// mapped without being written. A file whose allocation is unknown, or a refcount that cannot
    /// be read, means no.
    /// </summary>
    private async ValueTask<bool> DetectMetadataPreallocationLockedAsync()
    {
        if (File.AllocatedSize is not { } allocated) return false;
        long realClusters = allocated / _g.ClusterSize;
        long threshold = Math.Max(realClusters * 10 / 9, realClusters + 2);
        long end = _g.SizeToClusters(File.Length);
        long inUse = 0;
        try
        {
            for (long i = 0; i < end && inUse < threshold; i++)
                if (await _refcounts.GetAsync(i).ConfigureAwait(false) != 0) inUse++;
        }
        catch (IOException)
        {
            return false;
        }
        return inUse >= threshold;
    }

    /// <inheritdoc />
    /// <remarks>
    /// In an image preallocated with metadata, data clusters ask the file whether they are holes
    /// (BDRV_BLOCK_RECURSE), so never-written clusters read as zeroes in map and convert, as in QEMU.
    /// </remarks>
    public override async ValueTask<BlockStatus> GetBlockStatusAsync(long offset, long length, CancellationToken cancellationToken = default)
    {
        EnsureUsable();
        Mapping m;
        bool recurse;
        await _lock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            // Detected at the first query, whatever it finds, as qcow2_co_block_status does.
            _metadataPreallocation ??= await DetectMetadataPreallocationLockedAsync().ConfigureAwait(false);
            m = await MapLockedAsync(offset, Math.Min(length, Length - offset)).ConfigureAwait(false);
            recurse = m.Kind == Qcow2ClusterKind.Normal && !IsEncrypted && _metadataPreallocation.Value;
        }
        finally
        {
            _lock.Release();
        }
        if (recurse) return await FormatIo.RecurseIntoFileAsync(DataFile, m.HostOffset, m.Bytes, cancellationToken).ConfigureAwait(false);
        return m.Kind switch
        {
            // With encryption the host bytes are ciphertext: no offset is reported (qcow2_co_block_status).
            Qcow2ClusterKind.Normal when IsEncrypted => new BlockStatus(m.Bytes, BlockStatusFlags.Data | BlockStatusFlags.Allocated),
            Qcow2ClusterKind.ZeroAllocated when IsEncrypted => new BlockStatus(m.Bytes, BlockStatusFlags.Zero | BlockStatusFlags.Allocated),
            Qcow2ClusterKind.Normal => new BlockStatus(m.Bytes, BlockStatusFlags.Data | BlockStatusFlags.Allocated, m.HostOffset, DataFile),
            Qcow2ClusterKind.ZeroAllocated => new BlockStatus(m.Bytes, BlockStatusFlags.Zero | BlockStatusFlags.Allocated, m.HostOffset, DataFile),
            Qcow2ClusterKind.ZeroPlain => new BlockStatus(m.Bytes, BlockStatusFlags.Zero | BlockStatusFlags.Allocated),
            Qcow2ClusterKind.Compressed => new BlockStatus(m.Bytes, BlockStatusFlags.Data | BlockStatusFlags.Allocated),
            _ => new BlockStatus(m.Bytes, BlockStatusFlags.None),
        };
    }
}
