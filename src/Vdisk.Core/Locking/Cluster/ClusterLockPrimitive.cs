namespace Vdisk.Locking.Cluster;

/// <summary>
/// The lock primitive of a file node with <c>cluster-lock-id</c>: every lock byte is taken on
/// the local file (OFD or POSIX, so QEMU on this host keeps seeing vdisk's locks and vdisk keeps
/// honouring QEMU's) and as a key in etcd (so other hosts see it). A byte is locked by others
/// when either says so, the local answer first. The transaction above is unchanged: the same
/// bytes, the same order of tests, the same messages.
/// </summary>
/// <param name="local">The local primitive, or null when the local kind resolved to none (locking=auto without OFD).</param>
/// <param name="cluster">The node's cluster holder.</param>
internal sealed class ClusterLockPrimitive(ILockPrimitive? local, ClusterLockHolder cluster) : IBatchedLockPrimitive
{
    private int _clusterConflict = -1;

    /// <summary>The cluster part.</summary>
    public ClusterLockHolder Cluster => cluster;

    public void LockShared(int offset)
    {
        local?.LockShared(offset);
        cluster.Lock(offset);
    }

    public void Unlock(int offset)
    {
        local?.Unlock(offset);
        cluster.Unlock(offset);
    }

    public bool IsLockedByOthers(int offset)
    {
        _clusterConflict = -1;
        if (local?.IsLockedByOthers(offset) == true) return true;
        if (!cluster.IsHeldByOthers(offset)) return false;
        _clusterConflict = offset;
        return true;
    }

    public void Flush() => cluster.Flush();

    public LockConflictDetail? Conflict(int offset) =>
        _clusterConflict == offset ? new LockConflictDetail(cluster.HoldersAt(offset), cluster.WaitForChange()) : null;
}
