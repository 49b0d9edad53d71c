namespace Vdisk.Drivers.Qcow2;

/// <summary>
/// Migration hand-over (see <see cref="Graph.Activation"/>): what qcow2 does when its node stops
/// or starts being the one that owns the image. Another process writes the image in between,
/// so nothing cached may survive.
/// </summary>
public sealed partial class Qcow2Node
{
    /// <summary>
    /// qcow2_inactivate: every cached table goes to disk in the crash-safe order, and the dirty
    /// bit set for lazy refcounts is cleared, so the process taking over finds a clean image.
    /// </summary>
    protected internal override void OnInactivating()
    {
        if (IsReadOnly || _closed) return;
        InactivateAsync().AsTask().GetAwaiter().GetResult();
    }

    private async ValueTask InactivateAsync()
    {
        await LockQuiescedAsync().ConfigureAwait(false);
        try
        {
            await FlushLockedAsync(CancellationToken.None).ConfigureAwait(false);
            if (_markedDirty)
            {
                await SetIncompatibleFeaturesAsync(_header.IncompatibleFeatures & ~Qcow2Features.IncompatDirty).ConfigureAwait(false);
                _markedDirty = false;
            }
            // The next write after a later activation prepares the image again.
            _preparedForWrites = false;
        }
        finally
        {
            _lock.Release();
        }
    }

    /// <summary>
    /// qcow2_co_invalidate_cache: forgets the L2 and refcount caches and reads the header, L1
    /// table, refcount table and snapshot list again, as another process may have changed them
    /// all (allocated clusters, grown tables) while this node was inactive.
    /// </summary>
    protected internal override void OnActivated()
    {
        if (_closed) return;
        ReloadAsync().AsTask().GetAwaiter().GetResult();
    }

    private async ValueTask ReloadAsync()
    {
        await LockQuiescedAsync().ConfigureAwait(false);
        try
        {
            var header = Qcow2Header.Parse(await ReadHeaderAreaAsync(File, CancellationToken.None).ConfigureAwait(false));
            if (header.ClusterBits != _header.ClusterBits || header.RefcountOrder != _header.RefcountOrder)
                throw new Qcow2FormatException("The image's cluster or refcount geometry changed while the node was inactive");
            var l1 = await ReadTableEntriesAsync(File, (long)header.L1TableOffset, (int)header.L1Size, "Could not read L1 table", CancellationToken.None).ConfigureAwait(false);
            var refcountTable = await ReadTableEntriesAsync(File, (long)header.RefcountTableOffset,
                (int)(header.RefcountTableClusters * (_g.ClusterSize / 8)), "Could not read refcount table", CancellationToken.None).ConfigureAwait(false);
            var snapshots = await ReadSnapshotsAsync(File, header, CancellationToken.None).ConfigureAwait(false);

            _header = header;
            _l1 = l1;
            _l1Dirty = false;
            _l2Cache.Clear();
            _refcounts.ReplaceTable(refcountTable, (long)header.RefcountTableOffset, (int)header.RefcountTableClusters, _g.SizeToClusters(File.Length));
            _snapshots = snapshots;
            _pendingFrees.Clear();
            _tablesAwaitRefcounts = false;
            _refcountsAwaitTables = false;
            _markedDirty = false;
            _preparedForWrites = false;
        }
        finally
        {
            _lock.Release();
        }
    }
}
