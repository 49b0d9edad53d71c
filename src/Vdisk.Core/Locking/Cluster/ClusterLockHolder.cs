using System.Globalization;

namespace Vdisk.Locking.Cluster;

/// <summary>
/// One node's share of the cluster lock of one image: the lock bytes it wants, as etcd keys on
/// the process's lease. Lock and unlock calls only change the wanted set; a flush writes the
/// difference to etcd in one transaction, and a test (the first after a change) does the same
/// with a range read of the image's keys in that transaction, then answers every test of the
/// step from that snapshot. Tests therefore see exactly what QEMU's "lock, then test" would see.
/// </summary>
public sealed class ClusterLockHolder
{
    private static long s_nextHolder;
    private readonly Func<ClusterSession> _sessions;
    private readonly SortedSet<int> _wanted = new();
    private readonly SortedSet<int> _stored = new();
    private readonly SortedSet<int> _uncertain = new();
    private readonly string _file, _node;
    private readonly string? _fileId, _deviceId;
    private StoreResult? _snapshot;
    private byte[] _value = [];

    /// <summary>
    /// Creates the holder on the session <paramref name="sessions"/> returns (the process's, or one
    /// of its own in tests); it asks again for a session only to renew after a fence.
    /// </summary>
    /// <param name="sessions">Gives the live session; may start one (granting a lease).</param>
    /// <param name="lockId">The image's cluster-lock-id.</param>
    /// <param name="file">The image file as this host names it.</param>
    /// <param name="node">The node name, for holder records.</param>
    /// <param name="fileId">Device and inode on this host (<c>maj:min:ino</c>), used to tell two images apart under one id.</param>
    /// <param name="deviceId">A host-independent device identity (WWID), or null.</param>
    public ClusterLockHolder(Func<ClusterSession> sessions, string lockId, string file, string node, string? fileId = null, string? deviceId = null)
    {
        _sessions = sessions;
        LockId = ClusterLockSettings.ValidateLockId(lockId);
        _file = file;
        _node = node;
        _fileId = fileId;
        _deviceId = deviceId;
        Session = sessions();
        Record = NewRecord();
    }

    /// <summary>The image's cluster-lock-id.</summary>
    public string LockId { get; }

    /// <summary>The session (lease) the holder's keys are attached to.</summary>
    public ClusterSession Session { get; private set; }

    /// <summary>What the holder's keys say about it.</summary>
    public ClusterHolderRecord Record { get; private set; }

    /// <summary>The etcd revision of the holder's last acquisition (the second half of its fencing token), 0 before any.</summary>
    public long Revision { get; private set; }

    /// <summary>The fencing token <c>LEASE-HEX@REVISION</c>.</summary>
    public string FencingToken => $"{Record.LeaseHex}@{Revision.ToString(CultureInfo.InvariantCulture)}";

    /// <summary>The lock bytes whose keys are in etcd now.</summary>
    public IReadOnlyCollection<int> StoredBytes => _stored;

    /// <summary>True when the session has fenced itself: writes under this holder's locks must fail.</summary>
    public bool IsFenced => Session.IsFenced;

    private string KeyPrefix => Session.Settings.KeyPrefix;

    private string ImagePrefix => ClusterKeys.Image(KeyPrefix, LockId);

    private string Key(int offset) => ClusterKeys.Byte(KeyPrefix, LockId, offset, Record.Holder);

    private ClusterHolderRecord NewRecord()
    {
        string holder = Session.LeaseHex + "." + Interlocked.Increment(ref s_nextHolder).ToString(CultureInfo.InvariantCulture);
        var record = new ClusterHolderRecord(holder, Session.Settings.HostId, Environment.ProcessId, ClusterLocks.Command, Session.LeaseId, _file, _node, _fileId, _deviceId);
        _value = record.Encode();
        return record;
    }

    /// <summary>Wants the key of <paramref name="offset"/> (written at the next flush).</summary>
    public void Lock(int offset)
    {
        if (_wanted.Add(offset)) _snapshot = null;
    }

    /// <summary>No longer wants the key of <paramref name="offset"/> (deleted at the next flush).</summary>
    public void Unlock(int offset)
    {
        if (_wanted.Remove(offset)) _snapshot = null;
    }

    /// <summary>True when another holder has the key of <paramref name="offset"/> (after writing what this holder wants).</summary>
    public bool IsHeldByOthers(int offset)
    {
        if (_snapshot is null) Flush(read: true);
        return HoldersAt(offset).Any();
    }

    /// <summary>Writes what changed since the last flush.</summary>
    public void Flush() => Flush(read: false);

    /// <summary>The other holders with the key of <paramref name="offset"/> in the last snapshot, first acquired first.</summary>
    public IReadOnlyList<Inspection.LockHolder> HoldersAt(int offset)
    {
        if (_snapshot is null) return [];
        return ClusterHolding.FromEntries(KeyPrefix, _snapshot.Entries)
            .Where(h => h.LockId == LockId && h.Record.Holder != Record.Holder && h.Bytes.Contains(offset))
            .Select(h => new Inspection.LockHolder(h)).ToList();
    }

    /// <summary>Completes when the image's keys change after the last snapshot (an etcd watch).</summary>
    public Func<CancellationToken, Task> WaitForChange()
    {
        var store = Session.Store;
        string prefix = ImagePrefix;
        long revision = _snapshot?.Revision ?? 0;
        // This holder's own keys change too (the failed attempt takes them back): not a reason to retry.
        string own = "/" + Record.Holder;
        return async token =>
        {
            try
            {
                await store.WaitForChangeAsync(prefix, revision, own, token).ConfigureAwait(false);
            }
            catch (Exception e) when (e is ObjectDisposedException or ClusterLockException)
            {
                // The session ended: let the caller try again at once.
            }
        };
    }

    private void Flush(bool read)
    {
        var puts = _wanted.Where(o => !_stored.Contains(o)).ToList();
        var deletes = _stored.Concat(_uncertain).Where(o => !_wanted.Contains(o)).Distinct().ToList();
        if (puts.Count == 0 && deletes.Count == 0 && !read) return;
        if (Session.IsFenced)
        {
            if (puts.Count == 0 && !read)
            {
                // Releasing under a lost lease: its keys go with it.
                _stored.IntersectWith(_wanted);
                _uncertain.Clear();
                return;
            }
            if (_stored.Count == 0 && _uncertain.Count == 0)
            {
                // Nothing left of the old lease (everything was released after the fence): a
                // fresh acquisition under a new lease, as an explicit re-activation asks.
                Session = _sessions();
                Session.ThrowIfFenced();
                Record = NewRecord();
                Revision = 0;
            }
            else
            {
                Session.ThrowIfFenced();
            }
        }
        var writes = new List<StoreWrite>(puts.Count + deletes.Count);
        foreach (int o in puts) writes.Add(new StoreWrite(Key(o), _value, Record.Lease));
        foreach (int o in deletes) writes.Add(new StoreWrite(Key(o), null, 0));
        StoreResult result;
        try
        {
            result = Session.Store.CommitAsync(writes, read ? ImagePrefix : null, CancellationToken.None).GetAwaiter().GetResult();
        }
        catch (ClusterLockException)
        {
            // The transaction may or may not have happened: keys in doubt are deleted later.
            _uncertain.UnionWith(puts);
            _uncertain.UnionWith(deletes);
            _stored.ExceptWith(deletes);
            _snapshot = null;
            throw;
        }
        _stored.Clear();
        _stored.UnionWith(_wanted);
        _uncertain.Clear();
        if (puts.Count > 0) Revision = result.Revision;
        _snapshot = read ? result : null;
        if (read) CheckIdentity(result);
    }

    /// <summary>
    /// One id, one image: a holder on this host with another file under the same id (or a holder
    /// anywhere with another block device WWID) means the id was given to two images.
    /// </summary>
    private void CheckIdentity(StoreResult snapshot)
    {
        foreach (var other in ClusterHolding.FromEntries(KeyPrefix, snapshot.Entries))
        {
            if (other.LockId != LockId || other.Record.Holder == Record.Holder) continue;
            var r = other.Record;
            bool sameHostOtherFile = r.Host == Record.Host && r.FileId is not null && _fileId is not null && r.FileId != _fileId;
            bool otherDevice = r.DeviceId is not null && _deviceId is not null && r.DeviceId != _deviceId;
            if (sameHostOtherFile || otherDevice)
            {
                throw new ClusterLockException($"cluster-lock-id '{LockId}' already names another image: {r.Describe()} holds it for '{r.File}'" +
                    (otherDevice ? $" (device {r.DeviceId})" : $" ({r.FileId})") + $", this open is for '{_file}'" +
                    (otherDevice ? $" (device {_deviceId})" : $" ({_fileId})"));
            }
        }
    }

    /// <summary>
    /// Leaves the image: deletes this holder's keys (and any in doubt). When etcd does not answer,
    /// the keys are handed to the session, which deletes them once it can; at worst they expire
    /// with the lease.
    /// </summary>
    public void Release()
    {
        _wanted.Clear();
        try
        {
            Flush(read: false);
        }
        catch (ClusterLockException e)
        {
            Session.AddOrphans(_uncertain.Select(Key));
            _uncertain.Clear();
            Diagnostics.Warn($"could not release cluster lock '{LockId}': {e.Message}");
        }
    }
}
