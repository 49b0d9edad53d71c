using Vdisk.Locking.Cluster;

namespace Vdisk.Tests.Locking.Cluster;

/// <summary>
/// An in-memory model of what cluster locks use of etcd: a revisioned key space, leases whose
/// expiry the test decides, atomic batches with a read, and watches. Counts round trips, and can
/// be made unreachable.
/// </summary>
internal sealed class MemoryClusterStore : IClusterStore
{
    private readonly object _gate = new();
    private readonly SortedDictionary<string, StoreEntry> _keys = new(StringComparer.Ordinal);
    private readonly HashSet<long> _leases = new();
    private readonly List<(string Prefix, long After, Func<string, bool>? Ignore, TaskCompletionSource<long> Done)> _watches = new();
    private long _revision = 1;
    private long _nextLease = 0x694d0000;

    public IReadOnlyList<Uri> Endpoints { get; } = [new Uri("http://memory:2379")];

    /// <summary>Batches committed (round trips of <see cref="CommitAsync"/>).</summary>
    public int Commits { get; private set; }

    /// <summary>While true every call fails as if no endpoint answered.</summary>
    public bool Down { get; set; }

    /// <summary>Answers keep-alive; by default renews a live lease (TTL as granted) and reports 0 for a gone one.</summary>
    public Func<long, CancellationToken, Task<long>>? KeepAliveAnswer { get; set; }

    public long Revision
    {
        get
        {
            lock (_gate) return _revision;
        }
    }

    public IReadOnlyList<StoreEntry> Keys(string prefix)
    {
        lock (_gate) return _keys.Values.Where(e => e.Key.StartsWith(prefix, StringComparison.Ordinal)).ToList();
    }

    /// <summary>The lease expires on the server: its keys vanish.</summary>
    public void Expire(long lease)
    {
        lock (_gate)
        {
            _leases.Remove(lease);
            var gone = _keys.Values.Where(e => e.Lease == lease).Select(e => e.Key).ToList();
            if (gone.Count == 0) return;
            _revision++;
            foreach (var k in gone) _keys.Remove(k);
            Notify(gone);
        }
    }

    public bool LeaseAlive(long lease)
    {
        lock (_gate) return _leases.Contains(lease);
    }

    private void ThrowIfDown()
    {
        if (Down) throw new ClusterUnavailableException("etcd unreachable: http://memory:2379 (Connection refused)");
    }

    public Task<StoreLease> GrantLeaseAsync(long ttlSeconds, CancellationToken cancellationToken)
    {
        lock (_gate)
        {
            ThrowIfDown();
            long id = ++_nextLease;
            _leases.Add(id);
            return Task.FromResult(new StoreLease(id, ttlSeconds));
        }
    }

    public Task<long> KeepAliveAsync(long lease, CancellationToken cancellationToken)
    {
        if (KeepAliveAnswer is { } answer) return answer(lease, cancellationToken);
        lock (_gate)
        {
            ThrowIfDown();
            return Task.FromResult(_leases.Contains(lease) ? 10L : 0L);
        }
    }

    /// <summary>While true, revoking fails as if etcd did not answer (the lease then lives until <see cref="Expire"/>).</summary>
    public bool RevokeUnreachable { get; set; }

    public Task RevokeLeaseAsync(long lease, CancellationToken cancellationToken)
    {
        ThrowIfDown();
        if (RevokeUnreachable) throw new ClusterUnavailableException("etcd unreachable while revoking the lease: http://memory:2379 (no answer)");
        Expire(lease);
        return Task.CompletedTask;
    }

    public Task<long> LeaseTimeToLiveAsync(long lease, CancellationToken cancellationToken)
    {
        lock (_gate)
        {
            ThrowIfDown();
            return Task.FromResult(_leases.Contains(lease) ? 10L : -1L);
        }
    }

    public Task<StoreResult> CommitAsync(IReadOnlyList<StoreWrite> writes, string? readPrefix, CancellationToken cancellationToken)
    {
        lock (_gate)
        {
            ThrowIfDown();
            Commits++;
            if (writes.Count > 0)
            {
                _revision++;
                foreach (var w in writes)
                {
                    if (w.Value is null)
                    {
                        _keys.Remove(w.Key);
                        continue;
                    }
                    if (w.Lease != 0 && !_leases.Contains(w.Lease)) throw new ClusterLockException("etcdserver: requested lease not found");
                    long created = _keys.TryGetValue(w.Key, out var old) ? old.CreateRevision : _revision;
                    _keys[w.Key] = new StoreEntry(w.Key, w.Value, created, _revision, w.Lease);
                }
                Notify(writes.Select(w => w.Key).ToList());
            }
            var entries = readPrefix is null ? [] : _keys.Values.Where(e => e.Key.StartsWith(readPrefix, StringComparison.Ordinal)).ToList();
            return Task.FromResult(new StoreResult(_revision, entries));
        }
    }

    public Task<StoreResult> ReadAsync(string prefix, CancellationToken cancellationToken) => CommitAsync([], prefix, cancellationToken);

    public Task<long> WaitForChangeAsync(string prefix, long revision, string? ignoreSuffix, CancellationToken cancellationToken)
    {
        var done = new TaskCompletionSource<long>(TaskCreationOptions.RunContinuationsAsynchronously);
        Func<string, bool>? ignore = ignoreSuffix is null ? null : key => key.EndsWith(ignoreSuffix, StringComparison.Ordinal);
        lock (_gate) _watches.Add((prefix, revision, ignore, done));
        cancellationToken.Register(() => done.TrySetCanceled(cancellationToken));
        return done.Task;
    }

    private void Notify(List<string> changed)
    {
        foreach (var w in _watches.ToArray())
        {
            if (!changed.Any(k => k.StartsWith(w.Prefix, StringComparison.Ordinal) && w.Ignore?.Invoke(k) != true)) continue;
            _watches.Remove(w);
            w.Done.TrySetResult(_revision);
        }
    }

    public void Dispose()
    {
    }
}
