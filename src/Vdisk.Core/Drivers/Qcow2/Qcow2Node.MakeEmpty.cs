using System.Buffers.Binary;
using Vdisk.Graph;

namespace Vdisk.Drivers.Qcow2;

// qcow2_make_empty: the active layer dropped so that the backing file shows through (qemu-img commit).
public sealed partial class Qcow2Node
{
    /// <summary>
    /// qcow2_make_empty: a v3 image with nothing that reserves clusters of its own (snapshots,
    /// bitmaps, a LUKS header, an external data file) whose L1 table and three more clusters fit
    /// in one refcount block is rebuilt from scratch (make_completely_empty); any other has every
    /// cluster discarded, falling through to the backing file again.
    /// </summary>
    public override async ValueTask MakeEmptyAsync(CancellationToken ct = default)
    {
        EnsureWritable();
        await LockQuiescedAsync(ct).ConfigureAwait(false);
        try
        {
            long l1Clusters = L1Clusters;
            bool hasBitmaps = _header.Bitmaps is { Count: > 0 } && (_header.AutoclearFeatures & Qcow2Features.AutoclearBitmaps) != 0;
            if (_header.Version >= 3 && _snapshots.Count == 0 && !hasBitmaps && 3 + l1Clusters <= _g.RefcountBlockEntries
                && _header.CryptMethod != CryptLuks && !HasExternalDataFile)
            {
                await MakeCompletelyEmptyLockedAsync(l1Clusters, ct).ConfigureAwait(false);
                return;
            }
            await PrepareForWritesLockedAsync().ConfigureAwait(false);
            await DiscardClustersLockedAsync(0, Length, fullDiscard: true).ConfigureAwait(false);
            await FlushLockedAsync(ct).ConfigureAwait(false);
        }
        finally
        {
            _lock.Release();
        }
    }

    /// <summary>Clusters the active L1 table occupies.</summary>
    private long L1Clusters => _g.SizeToClusters(_l1.Length * 8L);

    /// <summary>
    /// make_completely_empty: with the dirty bit set (the refcounts are about to be wrong), the
    /// L1 table is zeroed, then the clusters after the header; the header gets a one-cluster
    /// refcount table at cluster 1 and the L1 table at cluster 3, the table's first entry the
    /// refcount block at cluster 2; those clusters are allocated again, the image marked clean
    /// and the file cut after the L1 table. A failure once the first write was tried leaves
    /// on-disk and in-memory refcounts apart: the node becomes unusable (QEMU ejects its driver),
    /// so nothing is flushed over what is on disk. The blkdebug events fire where QEMU's do.
    /// </summary>
    private async ValueTask MakeCompletelyEmptyLockedAsync(long l1Clusters, CancellationToken ct)
    {
        int cs = _g.ClusterSize;
        // qcow2_cache_empty on both caches: everything cached is written, then forgotten below.
        await FlushLockedAsync(ct).ConfigureAwait(false);
        // Whatever was still to be freed goes with everything else.
        _pendingFrees.Clear();
        if (_header.IncompatibleFeatures is var features && (features & Qcow2Features.IncompatDirty) == 0)
            await SetIncompatibleFeaturesAsync(features | Qcow2Features.IncompatDirty).ConfigureAwait(false);
        try
        {
            await File.DebugEventAsync(BlkdebugEvent.L1Update).ConfigureAwait(false);
            await File.WriteZeroesAsync((long)_header.L1TableOffset, l1Clusters * cs, ZeroFlags.None, ct).ConfigureAwait(false);
            Array.Clear(_l1);
            _l1Dirty = false;
            _l2Cache.Clear();
            _refcounts.Blocks.Clear();
            Volatile.Write(ref _lastDecompressed, null);

            await File.DebugEventAsync(BlkdebugEvent.EmptyImagePrepare).ConfigureAwait(false);
            // Room for the refcount table, one refcount block and the L1 table after the header;
            // the old tables there may be overwritten: the dirty bit excuses it.
            await File.WriteZeroesAsync(cs, (2 + l1Clusters) * cs, ZeroFlags.None, ct).ConfigureAwait(false);

            await File.DebugEventAsync(BlkdebugEvent.L1Update).ConfigureAwait(false);
            await File.DebugEventAsync(BlkdebugEvent.ReftableUpdate).ConfigureAwait(false);
            // l1_table_offset, refcount_table_offset and refcount_table_clusters are adjacent in the header.
            var pointers = new byte[20];
            BinaryPrimitives.WriteUInt64BigEndian(pointers, (ulong)(3L * cs));
            BinaryPrimitives.WriteUInt64BigEndian(pointers.AsSpan(8), (ulong)cs);
            BinaryPrimitives.WriteUInt32BigEndian(pointers.AsSpan(16), 1);
            await File.WriteAsync(Qcow2Header.L1TableOffsetOffset, pointers, WriteFlags.None, ct).ConfigureAwait(false);
            await File.FlushAsync(ct).ConfigureAwait(false);
            _header.L1TableOffset = (ulong)(3L * cs);
            _header.RefcountTableOffset = (ulong)cs;
            _header.RefcountTableClusters = 1;
            var table = new ulong[cs / 8];
            _refcounts.StartOver(table, cs, 1);

            await File.DebugEventAsync(BlkdebugEvent.RefblockAlloc).ConfigureAwait(false);
            var entry = new byte[8];
            BinaryPrimitives.WriteUInt64BigEndian(entry, (ulong)(2L * cs));
            await File.WriteAsync(cs, entry, WriteFlags.None, ct).ConfigureAwait(false);
            await File.FlushAsync(ct).ConfigureAwait(false);
            _refcounts.EnterBlock(0, 2L * cs);

            // The header, the refcount table and block and the L1 table: the first clusters again.
            long offset = await _refcounts.AllocateAsync(3 + l1Clusters).ConfigureAwait(false);
            if (offset != 0) throw new InvalidOperationException("First cluster in emptied image is in use");
        }
        catch (IOException)
        {
            _unusable = true;
            throw;
        }
        // qcow2_mark_clean writes the refcounts out before the bit goes.
        await SetIncompatibleFeaturesAsync(_header.IncompatibleFeatures & ~Qcow2Features.IncompatDirty).ConfigureAwait(false);
        await File.TruncateAsync((3 + l1Clusters) * cs, ct).ConfigureAwait(false);
    }
}
