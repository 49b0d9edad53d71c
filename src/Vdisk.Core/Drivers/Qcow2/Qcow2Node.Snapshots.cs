using System.Buffers.Binary;
using System.Globalization;
using Vdisk.Graph;
using Vdisk.Native;

namespace Vdisk.Drivers.Qcow2;

/// <summary>
/// Internal snapshots as QEMU 7.2's block/qcow2-snapshot.c makes them: create copies the active
/// L1 table and adds one reference to every cluster it reaches; apply (goto) makes a snapshot's
/// L1 table the active one; delete drops a snapshot's references. After each, the COPIED flags
/// say again which clusters have exactly one reference. The snapshot table is rewritten to new
/// clusters and the header switched to it before the old table is freed.
/// </summary>
public sealed partial class Qcow2Node
{
    /// <summary>qcow2_snapshot_create with qemu-img's snapshot info: a name, the time, no VM state.</summary>
    public override async Task CreateSnapshotAsync(string name, DateTimeOffset now, CancellationToken cancellationToken = default)
    {
        // A snapshot would share data clusters that the data file cannot keep apart.
        if (HasExternalDataFile) throw new NativeIOException(Errno.ENOTSUP, NativeIOException.Describe(Errno.ENOTSUP));
        var ct = cancellationToken;
        await LockQuiescedAsync(ct).ConfigureAwait(false);
        try
        {
            await BeginSnapshotChangeLockedAsync(ct).ConfigureAwait(false);
            if (_snapshots.Count >= Qcow2Snapshot.MaxSnapshots) throw new NativeIOException(Errno.EFBIG, "Too many snapshots");
            // find_new_snapshot_id: one past the largest numeric id.
            ulong maxId = 0;
            foreach (var s in _snapshots)
            {
                if (ulong.TryParse(s.Id, NumberStyles.None, CultureInfo.InvariantCulture, out ulong id) && id > maxId) maxId = id;
            }
            // qemu-img takes gettimeofday: seconds and microseconds.
            long microseconds = now.Ticks % TimeSpan.TicksPerSecond / 10;
            var snapshot = new Qcow2Snapshot
            {
                Id = (maxId + 1).ToString(CultureInfo.InvariantCulture),
                Name = name,
                DateSeconds = (uint)now.ToUnixTimeSeconds(),
                DateNanoseconds = (uint)(microseconds * 1000),
                DiskSize = (ulong)Length,
                Icount = 0,
                L1Size = (uint)_l1.Length,
            };
            long l1Bytes = _l1.Length * 8L;
            long l1Offset = await AllocateMetadataAsync(_g.SizeToClusters(l1Bytes)).ConfigureAwait(false);
            snapshot.L1TableOffset = (ulong)l1Offset;
            await File.WriteAsync(l1Offset, SerializeTable(_l1, _l1.Length), cancellationToken: ct).ConfigureAwait(false);
            await UpdateSnapshotRefcountLockedAsync(_l1, addend: 1, ct).ConfigureAwait(false);
            await WriteSnapshotTableLockedAsync([.. _snapshots, snapshot], ct).ConfigureAwait(false);
        }
        finally
        {
            _lock.Release();
        }
    }

    /// <summary>qcow2_snapshot_goto: the snapshot (by id, else by name) becomes the active state.</summary>
    /// <exception cref="NativeIOException">ENOENT when there is no such snapshot.</exception>
    public override async Task ApplySnapshotAsync(string idOrName, CancellationToken cancellationToken = default)
    {
        var ct = cancellationToken;
        await LockQuiescedAsync(ct).ConfigureAwait(false);
        try
        {
            var snapshot = _snapshots.FirstOrDefault(s => s.Id == idOrName) ?? _snapshots.FirstOrDefault(s => s.Name == idOrName)
                ?? throw new NativeIOException(Errno.ENOENT, LibC.StrError(Errno.ENOENT));
            ValidateTable(_g, snapshot.L1TableOffset, snapshot.L1Size, 8, Qcow2Geometry.MaxL1Bytes, "Snapshot L1 table");
            await BeginSnapshotChangeLockedAsync(ct).ConfigureAwait(false);
            if ((snapshot.DiskSize ?? (ulong)Length) != (ulong)Length)
                throw new NativeIOException(Errno.ENOTSUP, "vdisk cannot apply a snapshot of another disk size");
            if (snapshot.L1Size > _l1.Length) await GrowL1LockedAsync(snapshot.L1Size).ConfigureAwait(false);

            var raw = new byte[snapshot.L1Size * 8L];
            await File.ReadAsync((long)snapshot.L1TableOffset, raw, ct).ConfigureAwait(false);
            var newL1 = new ulong[_l1.Length];
            for (int i = 0; i < snapshot.L1Size; i++) newL1[i] = BinaryPrimitives.ReadUInt64BigEndian(raw.AsSpan(i * 8));
            await UpdateSnapshotRefcountLockedAsync(newL1[..(int)snapshot.L1Size], addend: 1, ct,
                (long)snapshot.L1TableOffset).ConfigureAwait(false);
            await File.WriteAsync((long)_header.L1TableOffset, SerializeTable(newL1, newL1.Length), cancellationToken: ct).ConfigureAwait(false);
            await SyncFileAsync().ConfigureAwait(false);
            // The old active tables lose the reference the active L1 held; then the new one is in memory.
            await UpdateSnapshotRefcountLockedAsync(_l1, addend: -1, ct).ConfigureAwait(false);
            _l1 = newL1;
            await UpdateSnapshotRefcountLockedAsync(_l1, addend: 0, ct).ConfigureAwait(false);
        }
        finally
        {
            _lock.Release();
        }
    }

    /// <summary>
    /// qcow2_snapshot_load_tmp: the snapshot's L1 table replaces the active one in memory only;
    /// the disk size stays the active one's, as in QEMU.
    /// </summary>
    public override async Task LoadSnapshotTemporarilyAsync(string? id, string? name, CancellationToken cancellationToken = default)
    {
        if (!IsReadOnly) throw new InvalidOperationException("a snapshot is loaded temporarily only into a read-only node");
        await LockQuiescedAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            var snapshot = _snapshots.FirstOrDefault(s => (id is null || s.Id == id) && (name is null || s.Name == name))
                ?? throw new NativeIOException(Errno.ENOENT, "Can't find snapshot");
            ValidateTable(_g, snapshot.L1TableOffset, snapshot.L1Size, 8, Qcow2Geometry.MaxL1Bytes, "Snapshot L1 table");
            var raw = new byte[snapshot.L1Size * 8L];
            await File.ReadAsync((long)snapshot.L1TableOffset, raw, cancellationToken).ConfigureAwait(false);
            var l1 = new ulong[snapshot.L1Size];
            for (int i = 0; i < l1.Length; i++) l1[i] = BinaryPrimitives.ReadUInt64BigEndian(raw.AsSpan(i * 8));
            _l1 = l1;
            _header.L1Size = snapshot.L1Size;
            _header.L1TableOffset = snapshot.L1TableOffset;
        }
        finally
        {
            _lock.Release();
        }
    }

    /// <summary>qcow2_snapshot_delete of the snapshot with this id and name.</summary>
    /// <exception cref="NativeIOException">ENOENT "Can't find the snapshot".</exception>
    public override async Task DeleteSnapshotAsync(string id, string name, CancellationToken cancellationToken = default)
    {
        var ct = cancellationToken;
        await LockQuiescedAsync(ct).ConfigureAwait(false);
        try
        {
            int index = _snapshots.FindIndex(s => s.Id == id && s.Name == name);
            if (index < 0) throw new NativeIOException(Errno.ENOENT, "Can't find the snapshot");
            var snapshot = _snapshots[index];
            ValidateTable(_g, snapshot.L1TableOffset, snapshot.L1Size, 8, Qcow2Geometry.MaxL1Bytes, "Snapshot L1 table");
            await BeginSnapshotChangeLockedAsync(ct).ConfigureAwait(false);
            var rest = _snapshots.Where((_, i) => i != index).ToList();
            await WithErrorPrefixAsync("Failed to remove snapshot from snapshot list",
                () => WriteSnapshotTableLockedAsync(rest, ct)).ConfigureAwait(false);

            // From here on a failure leaks clusters but leaves a consistent image, as in QEMU.
            var raw = new byte[snapshot.L1Size * 8L];
            await WithErrorPrefixAsync("Failed to free the cluster and L1 table", async () =>
            {
                await File.ReadAsync((long)snapshot.L1TableOffset, raw, ct).ConfigureAwait(false);
                var l1 = new ulong[snapshot.L1Size];
                for (int i = 0; i < l1.Length; i++) l1[i] = BinaryPrimitives.ReadUInt64BigEndian(raw.AsSpan(i * 8));
                await UpdateSnapshotRefcountLockedAsync(l1, addend: -1, ct).ConfigureAwait(false);
            }).ConfigureAwait(false);
            await FreeClustersLockedAsync((long)snapshot.L1TableOffset, raw.Length).ConfigureAwait(false);
            await WithErrorPrefixAsync("Failed to update snapshot status in disk",
                () => UpdateSnapshotRefcountLockedAsync(_l1, addend: 0, ct)).ConfigureAwait(false);
        }
        finally
        {
            _lock.Release();
        }
    }

    /// <summary>Everything cached goes to disk first, so the tables read below are current.</summary>
    private async ValueTask BeginSnapshotChangeLockedAsync(CancellationToken ct)
    {
        EnsureWritable();
        await PrepareForWritesLockedAsync().ConfigureAwait(false);
        await FlushLockedAsync(ct).ConfigureAwait(false);
    }

    /// <summary>The first <paramref name="entries"/> entries of an L1 or refcount table, as stored (big-endian).</summary>
    internal static byte[] SerializeTable(ulong[] table, int entries)
    {
        var raw = new byte[entries * 8L];
        for (int i = 0; i < entries; i++) BinaryPrimitives.WriteUInt64BigEndian(raw.AsSpan(i * 8), table[i]);
        return raw;
    }

    /// <summary>
    /// qcow2_update_snapshot_refcount: adds <paramref name="addend"/> to the refcount of every
    /// cluster <paramref name="l1"/> reaches (data, preallocated zero and compressed clusters, and
    /// the L2 tables), and sets each entry's COPIED flag to "refcount is one". The L1 table is
    /// written back (at <paramref name="l1Offset"/>, or the active table's place when null) unless its
    /// references are being dropped.
    /// </summary>
    private async ValueTask UpdateSnapshotRefcountLockedAsync(ulong[] l1, int addend, CancellationToken ct, long? l1Offset = null)
    {
        bool l1Modified = false;
        for (int i = 0; i < l1.Length; i++)
        {
            ulong oldL1 = l1[i];
            long l2Offset = (long)(oldL1 & L2Entry.OffsetMask);
            if (l2Offset == 0) continue;
            if (_g.OffsetInCluster(l2Offset) != 0)
                throw new NativeIOException(Errno.EIO, $"L2 table offset {Hex(l2Offset)} unaligned (L1 index: {Hex(i)})", Filename);
            var table = await _l2Cache.GetAsync(l2Offset).ConfigureAwait(false);
            int entries = _g.ClusterSize / 8;
            for (int j = 0; j < entries; j++)
            {
                var entry = EntryAt(table, j);
                ulong updated = entry.Raw & ~L2Entry.CopiedFlag;
                ulong refcount;
                switch (KindOf(entry))
                {
                    case Qcow2ClusterKind.Compressed:
                        if (addend != 0)
                        {
                            var (start, length) = entry.CompressedHostRange(_g);
                            await _refcounts.ChangeAsync(start, length, addend).ConfigureAwait(false);
                        }
                        refcount = 2; // compressed clusters are never written in place
                        updated = entry.Raw; // and carry no COPIED flag to fix
                        break;
                    case Qcow2ClusterKind.Normal:
                    case Qcow2ClusterKind.ZeroAllocated:
                        if (_g.OffsetInCluster(entry.HostOffset) != 0)
                            throw new NativeIOException(Errno.EIO, $"Cluster allocation offset {Hex(entry.HostOffset)} unaligned (L2 offset: {Hex(l2Offset)}, L2 index: {Hex(j)})", Filename);
                        if (addend != 0) await _refcounts.ChangeAsync(entry.HostOffset, 1, addend).ConfigureAwait(false);
                        refcount = await _refcounts.GetAsync(entry.HostOffset >> _g.ClusterBits).ConfigureAwait(false);
                        break;
                    default:
                        refcount = 0;
                        break;
                }
                if (refcount == 1) updated |= L2Entry.CopiedFlag;
                if (updated != entry.Raw)
                {
                    SetEntry(table, j, new L2Entry(updated));
                    table.Dirty = true;
                }
            }
            if (addend != 0) await _refcounts.ChangeAsync(l2Offset, 1, addend).ConfigureAwait(false);
            ulong l2Refcount = await _refcounts.GetAsync(l2Offset >> _g.ClusterBits).ConfigureAwait(false);
            if (l2Refcount == 0) _l2Cache.Discard(l2Offset);
            ulong newL1 = (ulong)l2Offset | (l2Refcount == 1 ? L2Entry.CopiedFlag : 0);
            if (newL1 != oldL1)
            {
                l1[i] = newL1;
                l1Modified = true;
            }
        }
        // bdrv_flush: refcounts before the L2 tables that rely on them, then the tables.
        await _refcounts.WriteBackAsync().ConfigureAwait(false);
        await SyncFileAsync().ConfigureAwait(false);
        await _l2Cache.WriteDirtyAsync().ConfigureAwait(false);
        await SyncFileAsync().ConfigureAwait(false);
        if (addend >= 0 && l1Modified)
        {
            long at = l1Offset ?? (long)_header.L1TableOffset;
            await File.WriteAsync(at, SerializeTable(l1, l1.Length), cancellationToken: ct).ConfigureAwait(false);
            await SyncFileAsync().ConfigureAwait(false);
        }
    }

    /// <summary>
    /// qcow2_write_snapshots: the table goes to newly allocated clusters (none when empty),
    /// every entry with the 24 bytes of known extra data; then the header points at it; then the
    /// old table's clusters are freed.
    /// </summary>
    private async ValueTask WriteSnapshotTableLockedAsync(List<Qcow2Snapshot> snapshots, CancellationToken ct)
    {
        foreach (var s in snapshots) s.ExtraData = KnownExtraData(s);
        var table = Qcow2Snapshot.SerializeTable(snapshots);
        long offset = 0;
        if (table.Length > 0)
        {
            offset = await AllocateMetadataAsync(_g.SizeToClusters(table.Length)).ConfigureAwait(false);
            await _refcounts.WriteBackAsync().ConfigureAwait(false);
            await SyncFileAsync().ConfigureAwait(false);
            await File.WriteAsync(offset, table, cancellationToken: ct).ConfigureAwait(false);
            await SyncFileAsync().ConfigureAwait(false);
        }
        var header = new byte[12];
        BinaryPrimitives.WriteUInt32BigEndian(header, (uint)snapshots.Count);
        BinaryPrimitives.WriteUInt64BigEndian(header.AsSpan(4), (ulong)offset);
        await File.WriteAsync(Qcow2Header.SnapshotCountOffset, header, cancellationToken: ct).ConfigureAwait(false);
        await SyncFileAsync().ConfigureAwait(false);
        long oldOffset = (long)_header.SnapshotsOffset;
        int oldSize = Qcow2Snapshot.TableSize(_snapshots);
        _header.SnapshotCount = (uint)snapshots.Count;
        _header.SnapshotsOffset = (ulong)offset;
        _snapshots = snapshots;
        if (oldOffset != 0 && oldSize > 0) await FreeClustersLockedAsync(oldOffset, oldSize).ConfigureAwait(false);
    }

    /// <summary>
    /// qcow2_free_clusters: drops one reference from the clusters of [offset, offset+length) and
    /// makes that durable. A failure only leaks the clusters: QEMU prints it and carries on.
    /// </summary>
    private async ValueTask FreeClustersLockedAsync(long offset, long length)
    {
        await File.DebugEventAsync(BlkdebugEvent.ClusterFree).ConfigureAwait(false);
        try
        {
            await _refcounts.ChangeAsync(offset, length, -1).ConfigureAwait(false);
            await _refcounts.WriteBackAsync().ConfigureAwait(false);
            await SyncFileAsync().ConfigureAwait(false);
        }
        catch (NativeIOException e)
        {
            Diagnostics.Report($"qcow2_free_clusters failed: {NativeIOException.Describe(e.Errno)}");
        }
    }

    /// <summary>error_setg_errno: a step's I/O error as "<paramref name="prefix"/>: strerror".</summary>
    private static async ValueTask WithErrorPrefixAsync(string prefix, Func<ValueTask> step)
    {
        try
        {
            await step().ConfigureAwait(false);
        }
        catch (NativeIOException e)
        {
            throw new NativeIOException(e.Errno, $"{prefix}: {NativeIOException.Describe(e.Errno)}");
        }
    }

    /// <summary>vm_state_size_large, disk_size and icount, then any extra data QEMU did not know.</summary>
    private byte[] KnownExtraData(Qcow2Snapshot s)
    {
        int unknown = Math.Max(0, s.ExtraData.Length - 24);
        var extra = new byte[24 + unknown];
        BinaryPrimitives.WriteUInt64BigEndian(extra, s.VmStateSize);
        BinaryPrimitives.WriteUInt64BigEndian(extra.AsSpan(8), s.DiskSize ?? (ulong)Length);
        BinaryPrimitives.WriteUInt64BigEndian(extra.AsSpan(16), s.Icount ?? ulong.MaxValue);
        if (unknown > 0) s.ExtraData.AsSpan(24).CopyTo(extra.AsSpan(24));
        return extra;
    }
}
