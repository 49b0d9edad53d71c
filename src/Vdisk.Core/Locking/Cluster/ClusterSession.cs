using System.Globalization;

namespace Vdisk.Locking.Cluster;

/// <summary>
/// One process's standing in the cluster: one etcd lease, kept alive in the background, to
/// which every lock key of every image the process holds is attached. It also decides when the
/// process must stop writing: the lease lives on the etcd side for its TTL after the last renewal
/// the server processed, and every renewal was processed after this process sent it, so as long
/// as less than <c>TTL - margin</c> has passed on the monotonic clock since the send time of the
/// last confirmed renewal, the lease is certainly still alive. Past that point the session is
/// fenced: writes under its locks are refused, for good (a new lease means a new acquisition).
/// </summary>
public sealed class ClusterSession : IDisposable
{
    private readonly TimeProvider _clock;
    private readonly CancellationTokenSource _stop = new();
    private readonly object _orphanGate = new();
    private readonly List<string> _orphans = new();
    private long _fenceAt;
    private int _fenced;
    private int _disposed;
    private Task? _keepAlive;
    private ITimer? _watchdog;

    private ClusterSession(ClusterLockSettings settings, IClusterStore store, TimeProvider clock, StoreLease lease)
    {
        Settings = settings;
        Store = store;
        _clock = clock;
        LeaseId = lease.Id;
        GrantedTtlSeconds = lease.TtlSeconds;
    }

    /// <summary>The settings the session was started with.</summary>
    public ClusterLockSettings Settings { get; }

    /// <summary>The store (etcd) the lease lives in.</summary>
    public IClusterStore Store { get; }

    /// <summary>The lease id (the first half of every fencing token of this process).</summary>
    public long LeaseId { get; }

    /// <summary>The lease id as etcdctl prints it.</summary>
    public string LeaseHex => LeaseId.ToString("x", CultureInfo.InvariantCulture);

    /// <summary>The TTL etcd granted (it may raise a short one to its minimum).</summary>
    public long GrantedTtlSeconds { get; }

    /// <summary>Why the session fenced itself, or null while it is live.</summary>
    public string? FenceReason { get; private set; }

    /// <summary>
    /// Raised once when the session fences itself (from the keep-alive task, or from the writer
    /// that noticed first). Handlers must not block.
    /// </summary>
    public event Action<ClusterSession>? Fenced;

    /// <summary>
    /// Grants the lease and starts keeping it alive. Fails with <see cref="ClusterUnavailableException"/>
    /// when etcd does not answer: nothing has been written then.
    /// </summary>
    public static ClusterSession Start(ClusterLockSettings settings, IClusterStore store, TimeProvider? clock = null)
    {
        clock ??= TimeProvider.System;
        long sent = clock.GetTimestamp();
        var lease = store.GrantLeaseAsync(settings.TtlSeconds, CancellationToken.None).GetAwaiter().GetResult();
        var session = new ClusterSession(settings, store, clock, lease);
        // Fires at the fence deadline (re-armed by every renewal), so the fence is reported even
        // if nothing writes and the keep-alive task is stuck.
        session._watchdog = clock.CreateTimer(_ => _ = session.IsFenced, null, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
        session.Confirm(sent, lease.TtlSeconds);
        session._keepAlive = Task.Run(session.KeepAliveLoopAsync);
        return session;
    }

    /// <summary>
    /// True once the session cannot be sure its lease is alive. Checked against the monotonic
    /// clock on every call, so a process that was stopped (SIGSTOP) past its deadline sees it
    /// before its next write, whatever the keep-alive task has had the chance to do.
    /// </summary>
    public bool IsFenced
    {
        get
        {
            if (Volatile.Read(ref _fenced) != 0) return true;
            if (_clock.GetTimestamp() < Volatile.Read(ref _fenceAt)) return false;
            Fence($"no keep-alive confirmed within {Seconds(Settings.Ttl - Settings.EffectiveFenceMargin)} s (lease TTL {Settings.TtlSeconds} s, fence margin {Seconds(Settings.EffectiveFenceMargin)} s)");
            return true;
        }
    }

    /// <summary>How long the session stays unfenced without another confirmed renewal (zero when fenced).</summary>
    public TimeSpan TimeLeft => IsFenced ? TimeSpan.Zero : _clock.GetElapsedTime(_clock.GetTimestamp(), Volatile.Read(ref _fenceAt));

    /// <summary>Throws <see cref="ClusterFencedException"/> when fenced.</summary>
    public void ThrowIfFenced()
    {
        if (IsFenced) throw new ClusterFencedException(FencedMessage);
    }

    /// <summary>The one-line explanation of a fence.</summary>
    public string FencedMessage => $"cluster lease {LeaseHex} was lost ({FenceReason}): this process fenced itself and writes nothing more under it";

    /// <summary>Keys whose deletion failed (etcd did not answer): retried after the next confirmed renewal.</summary>
    internal void AddOrphans(IEnumerable<string> keys)
    {
        lock (_orphanGate) _orphans.AddRange(keys);
    }

    private void Confirm(long sentAt, long ttlSeconds)
    {
        // The server may grant more than asked; the lease certainly lasts what was asked.
        var ttl = TimeSpan.FromSeconds(Math.Min(ttlSeconds, Settings.TtlSeconds));
        long until = sentAt + (long)((ttl - Settings.EffectiveFenceMargin).TotalSeconds * _clock.TimestampFrequency);
        long current;
        do
        {
            current = Volatile.Read(ref _fenceAt);
            if (until <= current) return;
        } while (Interlocked.CompareExchange(ref _fenceAt, until, current) != current);
        var due = _clock.GetElapsedTime(_clock.GetTimestamp(), until);
        _watchdog?.Change(due > TimeSpan.Zero ? due : TimeSpan.Zero, Timeout.InfiniteTimeSpan);
    }

    private void Fence(string reason)
    {
        if (Interlocked.Exchange(ref _fenced, 1) != 0) return;
        FenceReason = reason;
        _stop.Cancel();
        _watchdog?.Dispose();
        Fenced?.Invoke(this);
        // If etcd still has the lease (we only lost contact for a while), revoking it frees the
        // images for the other hosts now rather than at expiry.
        _ = Task.Run(async () =>
        {
            using var budget = new CancellationTokenSource(Settings.AttemptTimeout);
            try
            {
                await Store.RevokeLeaseAsync(LeaseId, budget.Token).ConfigureAwait(false);
            }
            catch (Exception e) when (e is IOException or OperationCanceledException or ObjectDisposedException)
            {
                // Unreachable: the lease expires by itself.
            }
            // Nothing is sent under this lease any more (holders renew on a new session).
            Store.Dispose();
        });
    }

    private async Task KeepAliveLoopAsync()
    {
        var token = _stop.Token;
        while (!token.IsCancellationRequested)
        {
            long sent = _clock.GetTimestamp();
            var budget = _clock.GetElapsedTime(sent, Volatile.Read(ref _fenceAt));
            if (budget <= TimeSpan.Zero)
            {
                _ = IsFenced;
                return;
            }
            // The attempt may take until the fence deadline, not longer: when it passes, fence at once.
            using (var deadline = new CancellationTokenSource(budget, _clock))
            using (var attempt = CancellationTokenSource.CreateLinkedTokenSource(token, deadline.Token))
            {
                try
                {
                    long ttl = await Store.KeepAliveAsync(LeaseId, attempt.Token).ConfigureAwait(false);
                    if (ttl <= 0)
                    {
                        Fence("etcd reports the lease expired");
                        return;
                    }
                    Confirm(sent, ttl);
                    await DeleteOrphansAsync(attempt.Token).ConfigureAwait(false);
                }
                catch (Exception) when (!token.IsCancellationRequested)
                {
                    // Whatever a failed renewal throws (a cancelled gRPC call, a reset connection),
                    // it is retried below until the deadline; this task must not die with it.
                }
            }
            if (IsFenced || token.IsCancellationRequested) return;
            var untilNext = Settings.KeepAliveInterval - _clock.GetElapsedTime(sent);
            var untilFence = _clock.GetElapsedTime(_clock.GetTimestamp(), Volatile.Read(ref _fenceAt));
            var pause = untilNext < untilFence ? untilNext : untilFence;
            try
            {
                if (pause > TimeSpan.Zero) await Task.Delay(pause, _clock, token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }

    private async Task DeleteOrphansAsync(CancellationToken token)
    {
        string[] keys;
        lock (_orphanGate)
        {
            if (_orphans.Count == 0) return;
            keys = [.. _orphans];
        }
        await Store.CommitAsync(keys.Select(k => new StoreWrite(k, null, 0)).ToList(), null, token).ConfigureAwait(false);
        lock (_orphanGate) _orphans.RemoveAll(keys.Contains);
    }

    /// <summary>
    /// Ends the session: stops keep-alive and revokes the lease (deleting any key still attached)
    /// within a short budget; when etcd does not answer, the lease simply expires.
    /// </summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        bool fenced = Volatile.Read(ref _fenced) != 0;
        _stop.Cancel();
        _watchdog?.Dispose();
        if (!fenced)
        {
            using var budget = new CancellationTokenSource(Settings.AttemptTimeout);
            try
            {
                Store.RevokeLeaseAsync(LeaseId, budget.Token).GetAwaiter().GetResult();
            }
            catch (Exception e) when (e is IOException or OperationCanceledException or ObjectDisposedException)
            {
                // The lease expires by itself.
            }
        }
        try
        {
            _keepAlive?.Wait(Settings.AttemptTimeout);
        }
        catch (AggregateException)
        {
        }
        Store.Dispose();
    }

    private static string Seconds(TimeSpan t) => t.TotalSeconds.ToString("0.###", CultureInfo.InvariantCulture);
}
