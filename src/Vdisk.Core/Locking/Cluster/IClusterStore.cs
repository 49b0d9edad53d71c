namespace Vdisk.Locking.Cluster;

/// <summary>One write of a batch: a put with a lease, or a delete when <see cref="Value"/> is null.</summary>
public readonly record struct StoreWrite(string Key, byte[]? Value, long Lease);

/// <summary>One key as the store holds it.</summary>
public sealed record StoreEntry(string Key, byte[] Value, long CreateRevision, long ModRevision, long Lease);

/// <summary>The outcome of a batch or read: the store's revision after it, and the keys read (empty when nothing was read).</summary>
public sealed record StoreResult(long Revision, IReadOnlyList<StoreEntry> Entries);

/// <summary>A granted lease: its id and the TTL the server granted (at least the one asked for).</summary>
public readonly record struct StoreLease(long Id, long TtlSeconds);

/// <summary>
/// What cluster locks need from a key-value store with leases and watches (etcd, or a fake in
/// unit tests). Every call fails with <see cref="ClusterUnavailableException"/> when no endpoint
/// answers in time, and with <see cref="ClusterLockException"/> for other refusals.
/// </summary>
public interface IClusterStore : IDisposable
{
    /// <summary>The endpoints, for messages.</summary>
    IReadOnlyList<Uri> Endpoints { get; }

    /// <summary>Grants a lease of <paramref name="ttlSeconds"/>.</summary>
    Task<StoreLease> GrantLeaseAsync(long ttlSeconds, CancellationToken cancellationToken);

    /// <summary>Renews a lease once; returns its TTL from now, or 0 when the lease no longer exists.</summary>
    Task<long> KeepAliveAsync(long lease, CancellationToken cancellationToken);

    /// <summary>Revokes a lease, deleting every key attached to it.</summary>
    Task RevokeLeaseAsync(long lease, CancellationToken cancellationToken);

    /// <summary>The seconds a lease has left, or -1 when it does not exist.</summary>
    Task<long> LeaseTimeToLiveAsync(long lease, CancellationToken cancellationToken);

    /// <summary>
    /// Applies <paramref name="writes"/> and then, in the same atomic step, reads every key under
    /// <paramref name="readPrefix"/> (when given): the read sees the writes and everything committed
    /// before, nothing committed after (one etcd transaction, one round trip).
    /// </summary>
    Task<StoreResult> CommitAsync(IReadOnlyList<StoreWrite> writes, string? readPrefix, CancellationToken cancellationToken);

    /// <summary>Reads every key under <paramref name="prefix"/> (linearizable).</summary>
    Task<StoreResult> ReadAsync(string prefix, CancellationToken cancellationToken);

    /// <summary>
    /// Completes when a key under <paramref name="prefix"/> changes after <paramref name="revision"/>
    /// (a watch, not polling), not counting keys that end with <paramref name="ignoreSuffix"/> (the
    /// waiter's own); returns the revision of the change.
    /// </summary>
    Task<long> WaitForChangeAsync(string prefix, long revision, string? ignoreSuffix, CancellationToken cancellationToken);
}

/// <summary>A cluster lock operation failed for a reason other than a lock conflict.</summary>
public class ClusterLockException(string message) : IOException(message);

/// <summary>No etcd endpoint answered: the message names each endpoint and what failed.</summary>
public sealed class ClusterUnavailableException(string message) : ClusterLockException(message);

/// <summary>
/// This process lost its lease (no keep-alive confirmed in time, or etcd says it expired): it
/// fenced itself and refuses writes on images it held under cluster locks.
/// </summary>
public sealed class ClusterFencedException(string message) : ClusterLockException(message);
