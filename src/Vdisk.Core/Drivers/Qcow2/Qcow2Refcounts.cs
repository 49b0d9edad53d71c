using System.Buffers.Binary;
using Vdisk.Graph;
using Vdisk.Native;

namespace Vdisk.Drivers.Qcow2;

/// <summary>
/// The refcount table, its blocks (through a bounded cache) and the cluster allocator. Called
/// under the node's metadata lock. Every structure is refcounted before anything points at it:
/// a new refcount block carries its own count (or is counted in another block that is synced
/// first); a grown table is written with its blocks before the header switches to it.
/// </summary>
internal sealed class Qcow2Refcounts
{
    /// <summary>REFT_OFFSET_MASK: bits 9-63 of a refcount table entry.</summary>
    public const ulong TableOffsetMask = 0xfffffffffffffe00UL;

    private readonly BlockNode _file;
    private readonly Qcow2Geometry _g;
    private readonly Func<ValueTask> _sync;
    private long _freeByteOffset;

    public Qcow2Refcounts(BlockNode file, Qcow2Geometry geometry, ulong[] table, long tableOffset, int tableClusters,
        int cacheCapacity, long allocatedEnd, Func<ValueTask> sync)
    {
        _file = file;
        _g = geometry;
        _sync = sync;
        _table = table;
        CountUsedEntries();
        TableOffset = tableOffset;
        TableClusters = tableClusters;
        AllocatedEnd = allocatedEnd;
        Blocks = new Qcow2Cache(cacheCapacity, geometry.ClusterSize,
            async (offset, buffer) =>
            {
                await _file.DebugEventAsync(BlkdebugEvent.RefblockLoad).ConfigureAwait(false);
                await _file.ReadAsync(offset, buffer).ConfigureAwait(false);
            },
            async t =>
            {
                if (BeforeBlocksWritten is not null) await BeforeBlocksWritten().ConfigureAwait(false);
                if (BeforeBlockWrite is not null) await BeforeBlockWrite(t.Offset, t.Data.Length).ConfigureAwait(false);
                await _file.DebugEventAsync(BlkdebugEvent.RefblockUpdatePart).ConfigureAwait(false);
                await _file.WriteAsync(t.Offset, t.Data).ConfigureAwait(false);
            });
    }

    private ulong[] _table;

    /// <summary>
    /// The refcount table entries, read-only: every change goes through this class, which keeps
    /// <see cref="UsedTable"/> in step with them.
    /// </summary>
    public ReadOnlyMemory<ulong> Table => _table;

    /// <summary>
    /// The entries up to the last one in use (QEMU's max_refcount_table_index): the overlap check
    /// of every write walks these, not the whole table, most of which is unused.
    /// </summary>
    public ReadOnlySpan<ulong> UsedTable => _table.AsSpan(0, _usedEntries);

    private int _usedEntries;

    private void CountUsedEntries()
    {
        int used = _table.Length;
        while (used > 0 && _table[used - 1] == 0) used--;
        _usedEntries = used;
    }

    /// <summary>Enters the block at <paramref name="blockOffset"/> in the table (the table itself is the caller's to write).</summary>
    public void EnterBlock(long tableIndex, long blockOffset)
    {
        _table[tableIndex] = (ulong)blockOffset;
        if (blockOffset == 0) CountUsedEntries();
        else _usedEntries = Math.Max(_usedEntries, (int)tableIndex + 1);
    }

    /// <summary>Where the table lives.</summary>
    public long TableOffset { get; private set; }

    /// <summary>Clusters of the table.</summary>
    public int TableClusters { get; private set; }

    /// <summary>The refcount block cache.</summary>
    public Qcow2Cache Blocks { get; }

    /// <summary>True when refcount blocks changed in memory since they were last written.</summary>
    public bool IsDirty => Blocks.HasDirty;

    /// <summary>
    /// Where the next allocation starts looking (QEMU's free_cluster_index): a cluster freed
    /// before it moves it back; an allocation leaves it after the run it took.
    /// </summary>
    public long FreeHint { get; set; }

    /// <summary>One past the highest cluster ever handed out or found in the file (allocations never need to look past it).</summary>
    public long AllocatedEnd { get; private set; }

    /// <summary>Runs before a refcount block is written (the node's overlap check, which signals and throws on a hit).</summary>
    public Func<long, long, ValueTask>? BeforeBlockWrite { get; init; }

    /// <summary>
    /// Runs before any refcount is raised in the cache: the node orders the metadata writes
    /// (tables still to be written that dropped references go first, see Qcow2Node's write order).
    /// </summary>
    public Func<ValueTask>? BeforeIncrease { get; init; }

    /// <summary>Runs before any refcount is lowered in the cache (the node's write order).</summary>
    public Func<ValueTask>? BeforeDecrease { get; init; }

    /// <summary>Runs before a refcount block is written back (the node writes the tables that must precede it).</summary>
    public Func<ValueTask>? BeforeBlocksWritten { get; init; }

    /// <summary>
    /// Runs before free clusters are looked for: the node issues the file discards it holds back
    /// for freed clusters (merged, as QEMU's), which must happen before a cluster is reused.
    /// </summary>
    public Func<ValueTask>? BeforeSearch { get; init; }

    private ValueTask OnIncreaseAsync() => BeforeIncrease?.Invoke() ?? ValueTask.CompletedTask;

    private ValueTask OnDecreaseAsync() => BeforeDecrease?.Invoke() ?? ValueTask.CompletedTask;

    /// <summary>Reports a corruption the refcounts found as fatal (qcow2_signal_corruption, which the node does).</summary>
    public Func<string, ValueTask>? CorruptionFound { get; init; }

    /// <summary>Signals the corruption; the request that met it fails with EIO.</summary>
    private async ValueTask<NativeIOException> CorruptAsync(string message)
    {
        if (CorruptionFound is not null) await CorruptionFound(message).ConfigureAwait(false);
        return new NativeIOException(Errno.EIO, NativeIOException.Describe(Errno.EIO), _file.Filename);
    }

    /// <summary>Raised after the table moved, with the new offset and cluster count (the header must follow).</summary>
    public Func<long, int, ValueTask>? TableMoved { get; set; }

    /// <summary>The refcount of host cluster <paramref name="cluster"/>.</summary>
    public ValueTask<ulong> GetAsync(long cluster)
    {
        long ti = _g.RefcountTableIndex(cluster);
        if (ti >= _table.Length) return ValueTask.FromResult(0UL);
        long blockOffset = BlockOffset(ti);
        if (blockOffset == 0) return ValueTask.FromResult(0UL);
        var pending = Blocks.GetAsync(blockOffset);
        if (pending.IsCompletedSuccessfully)
            return ValueTask.FromResult(RefcountCodec.Get(pending.Result.Data, _g.RefcountBlockIndex(cluster), _g.RefcountOrder));
        return ReadAfterLoadAsync(pending, cluster);
    }

    private async ValueTask<ulong> ReadAfterLoadAsync(ValueTask<CachedTable> pending, long cluster)
    {
        var block = await pending.ConfigureAwait(false);
        return RefcountCodec.Get(block.Data, _g.RefcountBlockIndex(cluster), _g.RefcountOrder);
    }

    /// <summary>The refcount block covering <paramref name="cluster"/>, or null when it has none.</summary>
    private async ValueTask<CachedTable?> BlockOfAsync(long cluster)
    {
        long ti = _g.RefcountTableIndex(cluster);
        if (ti >= _table.Length) return null;
        long blockOffset = BlockOffset(ti);
        if (blockOffset == 0) return null;
        return await Blocks.GetAsync(blockOffset).ConfigureAwait(false);
    }

    /// <summary>One past the last cluster described by the refcount block covering <paramref name="cluster"/>.</summary>
    private long BlockEnd(long cluster) => (_g.RefcountTableIndex(cluster) + 1) << _g.RefcountBlockBits;

    private long BlockOffset(long tableIndex)
    {
        // Reserved bits are masked off, as QEMU's qcow2_get_refcount does; only the offset must be aligned.
        long offset = (long)(_table[tableIndex] & TableOffsetMask);
        // Past any file the block layer can address (bit 63): the read fails, as bdrv_pread does.
        if (offset < 0) throw new NativeIOException(Errno.EIO, NativeIOException.Describe(Errno.EIO), _file.Filename);
        if ((offset & (_g.ClusterSize - 1)) != 0)
        {
            FoundCorruption = $"Refblock offset {Qcow2Node.Hex(offset)} unaligned (reftable index: {Qcow2Node.Hex(tableIndex)})";
            throw new NativeIOException(Errno.EIO, FoundCorruption, _file.Filename);
        }
        return offset;
    }

    /// <summary>
    /// The corruption a failed lookup found (qcow2_get_refcount signals it), for the node to
    /// signal as QEMU does; taken once.
    /// </summary>
    public string? FoundCorruption { get; private set; }

    /// <summary>Returns and forgets <see cref="FoundCorruption"/>.</summary>
    public string? TakeFoundCorruption()
    {
        string? found = FoundCorruption;
        FoundCorruption = null;
        return found;
    }

    /// <summary>
    /// Allocates <paramref name="count"/> contiguous clusters with refcount 1; returns the host
    /// offset. <paramref name="orderedAtLink"/>: the caller orders the metadata writes when it
    /// links the clusters into a table (a data write, as QEMU's qcow2_alloc_cluster_link_l2 sets
    /// the cache dependency), not now.
    /// </summary>
    public async ValueTask<long> AllocateAsync(long count, bool orderedAtLink = false)
    {
        await _file.DebugEventAsync(BlkdebugEvent.ClusterAlloc).ConfigureAwait(false);
        if (!orderedAtLink) await OnIncreaseAsync().ConfigureAwait(false);
        while (true)
        {
            long start = await FindFreeRunAsync(count).ConfigureAwait(false);
            if (await EnsureBlocksAsync(start, start + count, blocksFrom: start + count).ConfigureAwait(false)) continue;
            await MarkAllocatedAsync(start, count).ConfigureAwait(false);
            // alloc_clusters_noref leaves free_cluster_index after the run it found, even when
            // smaller holes before it were skipped: the next allocation starts there, as QEMU's.
            FreeHint = start + count;
            return start << _g.ClusterBits;
        }
    }

    /// <summary>
    /// qcow2_alloc_clusters_at: of <paramref name="count"/> clusters from <paramref name="hostOffset"/>,
    /// those free up to the first taken one get refcount 1; returns how many (0 when the first is
    /// taken). A write extends its data this way past clusters it overwrites in place. New
    /// refcount blocks go where the search hint points, as QEMU's do. Only data writes use it:
    /// they order the metadata writes when they link the clusters.
    /// </summary>
    public async ValueTask<long> AllocateAtAsync(long hostOffset, long count)
    {
        long start = hostOffset >> _g.ClusterBits;
        if (BeforeSearch is not null) await BeforeSearch().ConfigureAwait(false);
        while (true)
        {
            long free = 0;
            while (free < count && await GetAsync(start + free).ConfigureAwait(false) == 0) free++;
            if (free == 0) return 0;
            if (await EnsureBlocksAsync(start, start + free).ConfigureAwait(false)) continue;
            await MarkAllocatedAsync(start, free).ConfigureAwait(false);
            return free;
        }
    }

    /// <summary>Sets the refcount of <paramref name="count"/> clusters from <paramref name="start"/> (all with blocks) to 1.</summary>
    private async ValueTask MarkAllocatedAsync(long start, long count)
    {
        // One block lookup per refcount block, not per cluster.
        for (long c = start; c < start + count;)
        {
            var block = (await BlockOfAsync(c).ConfigureAwait(false))!;
            for (long stop = Math.Min(start + count, BlockEnd(c)); c < stop; c++)
                RefcountCodec.Set(block.Data, _g.RefcountBlockIndex(c), _g.RefcountOrder, 1);
            block.Dirty = true;
        }
        AllocatedEnd = Math.Max(AllocatedEnd, start + count);
    }

    /// <summary>
    /// qcow2_alloc_bytes: room for <paramref name="size"/> bytes of compressed data, packed after
    /// the previous compressed cluster; every host cluster touched gains one reference.
    /// </summary>
    public async ValueTask<long> AllocateBytesAsync(int size)
    {
        await _file.DebugEventAsync(BlkdebugEvent.ClusterAllocBytes).ConfigureAwait(false);
        await OnIncreaseAsync().ConfigureAwait(false);
        while (true)
        {
            long offset = _freeByteOffset;
            if (offset != 0 && await GetAsync(offset >> _g.ClusterBits).ConfigureAwait(false) >= _g.RefcountMax) offset = 0;
            long freeInCluster = offset == 0 ? 0 : _g.ClusterSize - _g.OffsetInCluster(offset);
            if (offset == 0 || freeInCluster < size)
            {
                long next = await FindFreeRunAsync(1).ConfigureAwait(false);
                if (next == 0) throw await CorruptAsync("Preventing invalid allocation of compressed cluster at offset 0").ConfigureAwait(false);
                long roundUp = (offset + _g.ClusterSize - 1) & ~(long)(_g.ClusterSize - 1);
                if (offset == 0 || roundUp != next << _g.ClusterBits) offset = next << _g.ClusterBits;
            }
            long first = offset >> _g.ClusterBits, last = (offset + size - 1) >> _g.ClusterBits;
            if (await EnsureBlocksAsync(first, last + 1, blocksFrom: last + 1).ConfigureAwait(false)) continue;
            for (long c = first; c <= last; c++)
            {
                ulong rc = await GetAsync(c).ConfigureAwait(false);
                await SetAsync(c, rc + 1).ConfigureAwait(false);
            }
            AllocatedEnd = Math.Max(AllocatedEnd, last + 1);
            if (first <= FreeHint && FreeHint <= last) FreeHint = last + 1;
            _freeByteOffset = _g.OffsetInCluster(offset + size) == 0 ? 0 : offset + size;
            return offset;
        }
    }

    /// <summary>
    /// Adds <paramref name="addend"/> to the refcount of every cluster touched by the byte range.
    /// Decrements below zero and increments past the maximum fail with EIO (the image is inconsistent).
    /// </summary>
    public async ValueTask ChangeAsync(long offset, long length, long addend)
    {
        if (length <= 0) return;
        long first = offset >> _g.ClusterBits, last = (offset + length - 1) >> _g.ClusterBits;
        if (addend < 0) await OnDecreaseAsync().ConfigureAwait(false);
        if (addend > 0)
        {
            await OnIncreaseAsync().ConfigureAwait(false);
            while (await EnsureBlocksAsync(first, last + 1).ConfigureAwait(false)) { }
        }
        for (long c = first; c <= last; c++)
        {
            ulong rc = await GetAsync(c).ConfigureAwait(false);
            ulong next;
            if (addend < 0)
            {
                if (rc < (ulong)-addend)
                    throw new NativeIOException(Errno.EIO, $"qcow2: refcount of cluster {c} would drop below zero", _file.Filename);
                next = rc - (ulong)-addend;
            }
            else
            {
                if (_g.RefcountMax - rc < (ulong)addend)
                    throw new NativeIOException(Errno.EIO, $"qcow2: refcount of cluster {c} would exceed the maximum", _file.Filename);
                next = rc + (ulong)addend;
            }
            if (_g.RefcountTableIndex(c) >= _table.Length || BlockOffset(_g.RefcountTableIndex(c)) == 0)
            {
                if (next == 0) continue;
                throw new NativeIOException(Errno.EIO, $"qcow2: cluster {c} has no refcount block", _file.Filename);
            }
            await SetAsync(c, next).ConfigureAwait(false);
            if (next == 0)
            {
                if (c < FreeHint) FreeHint = c;
                if (_freeByteOffset != 0 && _freeByteOffset >> _g.ClusterBits == c) _freeByteOffset = 0;
            }
        }
    }

    /// <summary>Sets a refcount whose block exists.</summary>
    public async ValueTask SetAsync(long cluster, ulong value)
    {
        long blockOffset = BlockOffset(_g.RefcountTableIndex(cluster));
        var block = await Blocks.GetAsync(blockOffset).ConfigureAwait(false);
        RefcountCodec.Set(block.Data, _g.RefcountBlockIndex(cluster), _g.RefcountOrder, value);
        block.Dirty = true;
    }

    /// <summary>Switches to a rebuilt table (check -r all); cached blocks are dropped.</summary>
    public void ReplaceTable(ulong[] table, long offset, int clusters, long allocatedEnd)
    {
        Blocks.Clear();
        _table = table;
        CountUsedEntries();
        TableOffset = offset;
        TableClusters = clusters;
        AllocatedEnd = Math.Max(AllocatedEnd, allocatedEnd);
        FreeHint = 0;
    }

    /// <summary>
    /// make_completely_empty: the refcounts start over from an empty table at <paramref name="offset"/>
    /// whose blocks (none yet) the caller enters; nothing cached or counted before is kept.
    /// </summary>
    public void StartOver(ulong[] table, long offset, int clusters)
    {
        Blocks.Clear();
        _table = table;
        CountUsedEntries();
        TableOffset = offset;
        TableClusters = clusters;
        AllocatedEnd = 0;
        FreeHint = 0;
        _freeByteOffset = 0;
    }

    /// <summary>
    /// qcow2_shrink_reftable, after a shrink freed the cropped clusters: refcount blocks that count
    /// nothing (but themselves) leave the table, which is written and synced first; then each one
    /// loses its own reference and its cluster is discarded. A block whose own cluster no block
    /// covers, or whose refcount is not 1, is corruption (signalled; the rest of the table is
    /// still dropped from memory, nothing more is discarded, and the first error is thrown).
    /// </summary>
    public async ValueTask ShrinkTableAsync()
    {
        var kept = new ulong[_table.Length];
        for (long i = 0; i < _table.Length; i++)
        {
            long offset = (long)(_table[i] & TableOffsetMask);
            if (offset == 0) continue;
            if (_g.OffsetInCluster(offset) != 0)
                throw await CorruptAsync($"Cannot get entry from refcount block cache: Offset {Qcow2Node.Hex(offset)} is unaligned").ConfigureAwait(false);
            var block = await Blocks.GetAsync(offset).ConfigureAwait(false);
            // A block describing its own cluster is unused if that is all it counts.
            long own = _g.RefcountTableIndex(offset >> _g.ClusterBits) == i ? _g.RefcountBlockIndex(offset >> _g.ClusterBits) : -1;
            bool unused = true;
            for (long k = 0; k < _g.RefcountBlockEntries && unused; k++)
                unused = k == own || RefcountCodec.Get(block.Data, k, _g.RefcountOrder) == 0;
            kept[i] = unused ? 0 : _table[i];
        }
        await _file.WriteAsync(TableOffset, Qcow2Node.SerializeTable(kept, kept.Length)).ConfigureAwait(false);
        await _sync().ConfigureAwait(false);

        Exception? failure = null;
        var discarded = new List<long>();
        for (long i = 0; i < _table.Length; i++)
        {
            if (_table[i] == 0 || kept[i] != 0) continue;
            long offset = (long)(_table[i] & TableOffsetMask);
            if (failure is null)
            {
                try
                {
                    await DropOwnReferenceAsync(offset).ConfigureAwait(false);
                    discarded.Add(offset);
                }
                catch (NativeIOException e)
                {
                    failure = e;
                }
            }
            _table[i] = 0;
        }
        CountUsedEntries();
        if (failure is not null) throw failure;
        await WriteBackAsync().ConfigureAwait(false);
        await _sync().ConfigureAwait(false);
        foreach (long offset in discarded) await _file.DiscardAsync(offset, _g.ClusterSize).ConfigureAwait(false);
    }

    /// <summary>qcow2_discard_refcount_block: the refcount of an unused block's own cluster goes from 1 to 0.</summary>
    private async ValueTask DropOwnReferenceAsync(long blockOffset)
    {
        long cluster = blockOffset >> _g.ClusterBits;
        long index = _g.RefcountTableIndex(cluster);
        long covering = index < _table.Length ? (long)(_table[index] & TableOffsetMask) : 0;
        if (covering == 0)
            throw await CorruptAsync($"Refblock at {Qcow2Node.Hex(blockOffset)} is not covered by the refcount structures").ConfigureAwait(false);
        var block = await Blocks.GetAsync(covering).ConfigureAwait(false);
        ulong refcount = RefcountCodec.Get(block.Data, _g.RefcountBlockIndex(cluster), _g.RefcountOrder);
        if (refcount != 1)
        {
            await CorruptAsync($"Invalid refcount: refblock offset {Qcow2Node.Hex(covering)}, reftable index {index}, block offset {Qcow2Node.Hex(blockOffset)}, refcount {Qcow2Node.Hex((long)refcount)}").ConfigureAwait(false);
            throw new NativeIOException(Errno.EINVAL, NativeIOException.Describe(Errno.EINVAL), _file.Filename);
        }
        await OnDecreaseAsync().ConfigureAwait(false);
        RefcountCodec.Set(block.Data, _g.RefcountBlockIndex(cluster), _g.RefcountOrder, 0);
        block.Dirty = true;
        if (cluster < FreeHint) FreeHint = cluster;
        Blocks.Discard(blockOffset);
    }

    /// <summary>Writes every changed refcount block.</summary>
    public ValueTask WriteBackAsync() => Blocks.WriteDirtyAsync();

    /// <summary>The first run of <paramref name="count"/> free clusters at or after <paramref name="from"/> (default: the hint).</summary>
    public async ValueTask<long> FindFreeRunAsync(long count, long? from = null)
    {
        if (BeforeSearch is not null) await BeforeSearch().ConfigureAwait(false);
        // Cluster 0 too: in a damaged image its refcount can be 0, and then, as in QEMU, it is
        // handed out and the caller's check refuses it (nothing is ever written there).
        long c = from ?? FreeHint, runStart = c, run = 0;
        while (run < count)
        {
            if (c >= AllocatedEnd)
            {
                // Nothing was ever allocated here: all free (refcounts past the end are not trusted to be zero by QEMU either).
                if (run == 0) runStart = c;
                return await FirstFreeFromAsync(runStart, count).ConfigureAwait(false);
            }
            var block = await BlockOfAsync(c).ConfigureAwait(false);
            if (block is null)
            {
                long blockEnd = BlockEnd(c);
                if (run == 0) runStart = c;
                run += blockEnd - c;
                c = blockEnd;
                continue;
            }
            // Scan this block's entries directly, up to the allocated end (checked above).
            for (long stop = Math.Min(BlockEnd(c), AllocatedEnd); c < stop && run < count; c++)
            {
                if (RefcountCodec.Get(block.Data, _g.RefcountBlockIndex(c), _g.RefcountOrder) == 0)
                {
                    if (run == 0) runStart = c;
                    run++;
                }
                else
                {
                    run = 0;
                }
            }
        }
        return runStart;
    }

    private async ValueTask<long> FirstFreeFromAsync(long start, long count)
    {
        // Past AllocatedEnd the refcounts should be zero; a corrupt image could claim otherwise.
        long c = start, run = 0, runStart = start;
        while (run < count)
        {
            var block = await BlockOfAsync(c).ConfigureAwait(false);
            for (long stop = BlockEnd(c); c < stop && run < count;)
            {
                if (block is null || RefcountCodec.Get(block.Data, _g.RefcountBlockIndex(c), _g.RefcountOrder) == 0)
                {
                    if (run == 0) runStart = c;
                    run++;
                }
                else run = 0;
                c++;
                if (c - start > (1L << 24) && run == 0)
                    throw new NativeIOException(Errno.ENOSPC, "qcow2: no free clusters found", _file.Filename);
            }
        }
        return runStart;
    }

    /// <summary>
    /// Makes sure clusters [<paramref name="first"/>, <paramref name="end"/>) have refcount
    /// blocks. Returns true when it had to create one (free space changed: the caller retries).
    /// A new block goes to the first free cluster at or after <paramref name="blocksFrom"/>
    /// (default: the hint): for a run just found, after it, as QEMU's search has moved past the
    /// run when alloc_refcount_block looks for room; the caller's retry then finds the run again.
    /// </summary>
    private async ValueTask<bool> EnsureBlocksAsync(long first, long end, long? blocksFrom = null)
    {
        for (long ti = _g.RefcountTableIndex(first); ti <= _g.RefcountTableIndex(end - 1); ti++)
        {
            if (ti >= _table.Length)
            {
                await GrowTableAsync(ti).ConfigureAwait(false);
                return true;
            }
            if (BlockOffset(ti) == 0)
            {
                await CreateBlockAsync(ti, blocksFrom).ConfigureAwait(false);
                return true;
            }
        }
        return false;
    }

    private async ValueTask CreateBlockAsync(long tableIndex, long? from = null)
    {
        long b = await FindFreeRunAsync(1, from).ConfigureAwait(false);
        if (b == 0) throw await CorruptAsync("Preventing invalid allocation of refcount block at offset 0").ConfigureAwait(false);
        long bti = _g.RefcountTableIndex(b);
        if (bti >= _table.Length)
        {
            await GrowTableAsync(bti).ConfigureAwait(false);
            return;
        }
        CachedTable block;
        if (bti == tableIndex)
        {
            // The new block describes its own cluster.
            block = await Blocks.CreateAsync(b << _g.ClusterBits).ConfigureAwait(false);
            RefcountCodec.Set(block.Data, _g.RefcountBlockIndex(b), _g.RefcountOrder, 1);
        }
        else
        {
            if (BlockOffset(bti) == 0)
            {
                await CreateBlockAsync(bti, b + 1).ConfigureAwait(false);
                return;
            }
            await SetAsync(b, 1).ConfigureAwait(false);
            block = await Blocks.CreateAsync(b << _g.ClusterBits).ConfigureAwait(false);
        }
        AllocatedEnd = Math.Max(AllocatedEnd, b + 1);
        await Blocks.WriteDirtyAsync().ConfigureAwait(false);
        await _sync().ConfigureAwait(false);
        EnterBlock(tableIndex, b << _g.ClusterBits);
        var entry = new byte[8];
        BinaryPrimitives.WriteUInt64BigEndian(entry, _table[tableIndex]);
        await _file.DebugEventAsync(BlkdebugEvent.RefblockAllocHookup).ConfigureAwait(false);
        await _file.WriteAsync(TableOffset + tableIndex * 8, entry).ConfigureAwait(false);
    }

    /// <summary>
    /// qcow2_refcount_area: a larger table, placed with the blocks that describe it after
    /// everything allocated so far; written and synced before the header points at it; the old
    /// table is freed afterwards.
    /// </summary>
    private async ValueTask GrowTableAsync(long neededIndex)
    {
        long start = AllocatedEnd;
        long perBlock = _g.RefcountBlockEntries;
        long entries = Math.Max(neededIndex + 1, _table.Length + _table.Length / 2 + 1);
        long tableClusters, newBlocks;
        while (true)
        {
            tableClusters = _g.SizeToClusters(entries * 8);
            newBlocks = 0;
            long areaEnd = start;
            // The area holds the new blocks and the table; count blocks needed to describe it.
            for (int iter = 0; iter < 64; iter++)
            {
                areaEnd = start + newBlocks + tableClusters;
                long needed = 0;
                for (long ti = start / perBlock; ti <= (areaEnd - 1) / perBlock; ti++)
                    if (ti >= _table.Length || BlockOffset(ti) == 0) needed++;
                if (needed == newBlocks) break;
                newBlocks = needed;
            }
            areaEnd = start + newBlocks + tableClusters;
            long lastIndex = (areaEnd - 1) / perBlock;
            if (lastIndex < entries) break;
            entries = lastIndex + 1;
        }
        if (entries * 8 > Qcow2Geometry.MaxRefcountTableBytes)
            throw new NativeIOException(Errno.EFBIG, "qcow2: the refcount table would exceed its maximum size", _file.Filename);

        var table = new ulong[tableClusters * (_g.ClusterSize / 8)];
        Array.Copy(_table, table, _table.Length);
        long areaEnd2 = start + newBlocks + tableClusters;
        var created = new Dictionary<long, byte[]>();
        long next = start;
        for (long ti = start / perBlock; ti <= (areaEnd2 - 1) / perBlock; ti++)
        {
            if (ti < _table.Length && BlockOffset(ti) != 0) continue;
            table[ti] = (ulong)(next << _g.ClusterBits);
            created[ti] = new byte[_g.ClusterSize];
            next++;
        }
        for (long c = start; c < areaEnd2; c++)
        {
            long ti = c / perBlock;
            if (created.TryGetValue(ti, out var data)) RefcountCodec.Set(data, _g.RefcountBlockIndex(c), _g.RefcountOrder, 1);
            else await SetAsync(c, 1).ConfigureAwait(false);
        }
        await _file.DebugEventAsync(BlkdebugEvent.RefblockAllocWriteBlocks).ConfigureAwait(false);
        foreach (var (ti, data) in created) await _file.WriteAsync((long)table[ti], data).ConfigureAwait(false);
        await Blocks.WriteDirtyAsync().ConfigureAwait(false);
        var raw = Qcow2Node.SerializeTable(table, table.Length);
        long tableOffset = (start + newBlocks) << _g.ClusterBits;
        await _file.DebugEventAsync(BlkdebugEvent.RefblockAllocWriteTable).ConfigureAwait(false);
        await _file.WriteAsync(tableOffset, raw).ConfigureAwait(false);
        await _sync().ConfigureAwait(false);

        long oldOffset = TableOffset;
        int oldClusters = TableClusters;
        _table = table;
        CountUsedEntries();
        TableOffset = tableOffset;
        TableClusters = (int)tableClusters;
        AllocatedEnd = Math.Max(AllocatedEnd, areaEnd2);
        if (TableMoved is not null) await TableMoved(tableOffset, (int)tableClusters).ConfigureAwait(false);
        await _sync().ConfigureAwait(false);
        if (oldClusters > 0 && oldOffset != 0)
            await ChangeAsync(oldOffset, (long)oldClusters << _g.ClusterBits, -1).ConfigureAwait(false);
    }
}
