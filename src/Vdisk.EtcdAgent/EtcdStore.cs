using System.Diagnostics;
using System.Globalization;
using Etcdserverpb;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Net.Client;

namespace Vdisk.Locking.Cluster;

/// <summary>
/// <see cref="IClusterStore"/> on etcd v3 over gRPC (the generated stubs of dotnet-etcd, on
/// channels this class owns so that it controls deadlines and fail-over): one channel per
/// endpoint, the endpoint that answered last tried first, the others in order when it does
/// not answer within <see cref="ClusterLockSettings.AttemptTimeout"/>. While some member answers
/// with a retryable error (no leader during an election) an operation keeps trying until
/// <see cref="ClusterLockSettings.OperationTimeout"/>; when every endpoint refuses connections it
/// fails at once, naming each endpoint and its error.
/// </summary>
public sealed class EtcdStore : IClusterStore
{
    private readonly Uri[] _endpoints;
    private readonly GrpcChannel?[] _channels;
    private readonly TimeSpan _attemptTimeout;
    private readonly TimeSpan _operationTimeout;
    private readonly object _gate = new();
    private readonly CancellationTokenSource _disposed = new();
    private readonly SemaphoreSlim _keepAliveGate = new(1, 1);
    private AsyncDuplexStreamingCall<LeaseKeepAliveRequest, LeaseKeepAliveResponse>? _keepAlive;
    private int _keepAliveEndpoint = -1;
    private int _preferred;

    /// <summary>Creates a store for the settings' endpoints (connections are made on first use).</summary>
    public EtcdStore(ClusterLockSettings settings)
    {
        if (settings.Endpoints.Count == 0) throw new ArgumentException("no etcd endpoints", nameof(settings));
        _endpoints = [.. settings.Endpoints];
        _channels = new GrpcChannel?[_endpoints.Length];
        _attemptTimeout = settings.AttemptTimeout;
        _operationTimeout = settings.OperationTimeout;
    }

    /// <inheritdoc />
    public IReadOnlyList<Uri> Endpoints => _endpoints;

    private GrpcChannel Channel(int index)
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed.IsCancellationRequested, this);
            return _channels[index] ??= GrpcChannel.ForAddress(_endpoints[index], new GrpcChannelOptions
            {
                HttpHandler = new SocketsHttpHandler
                {
                    ConnectTimeout = _attemptTimeout,
                    // A member that vanished without closing the connection (a partition) is
                    // noticed by these pings, not only by the deadlines of calls.
                    KeepAlivePingDelay = TimeSpan.FromSeconds(5),
                    // The handler refuses ping timeouts under a second; calls still have their own deadlines.
                    KeepAlivePingTimeout = _attemptTimeout < TimeSpan.FromSeconds(1) ? TimeSpan.FromSeconds(1) : _attemptTimeout,
                    KeepAlivePingPolicy = HttpKeepAlivePingPolicy.WithActiveRequests,
                    EnableMultipleHttp2Connections = true,
                },
                DisposeHttpClient = true,
                // Our own cancellations (deadlines of renewals, a wait that ends) are not errors of etcd.
                ThrowOperationCanceledOnCancellation = true,
            });
        }
    }

    /// <inheritdoc />
    public Task<StoreLease> GrantLeaseAsync(long ttlSeconds, CancellationToken cancellationToken) =>
        CallAsync("granting a lease", async (channel, options) =>
        {
            var response = await new Lease.LeaseClient(channel).LeaseGrantAsync(new LeaseGrantRequest { TTL = ttlSeconds }, options).ResponseAsync.ConfigureAwait(false);
            if (!string.IsNullOrEmpty(response.Error)) throw new ClusterLockException($"etcd refused a lease: {response.Error}");
            return new StoreLease(response.ID, response.TTL);
        }, cancellationToken);

    /// <inheritdoc />
    public Task RevokeLeaseAsync(long lease, CancellationToken cancellationToken) =>
        CallAsync("revoking the lease", async (channel, options) =>
        {
            try
            {
                await new Lease.LeaseClient(channel).LeaseRevokeAsync(new LeaseRevokeRequest { ID = lease }, options).ResponseAsync.ConfigureAwait(false);
            }
            catch (RpcException e) when (e.StatusCode == StatusCode.NotFound)
            {
                // Already expired: nothing left to revoke.
            }
            return true;
        }, cancellationToken);

    /// <inheritdoc />
    public Task<long> LeaseTimeToLiveAsync(long lease, CancellationToken cancellationToken) =>
        CallAsync("reading a lease", async (channel, options) =>
        {
            var response = await new Lease.LeaseClient(channel).LeaseTimeToLiveAsync(new LeaseTimeToLiveRequest { ID = lease }, options).ResponseAsync.ConfigureAwait(false);
            return response.TTL;
        }, cancellationToken);

    /// <inheritdoc />
    public Task<StoreResult> CommitAsync(IReadOnlyList<StoreWrite> writes, string? readPrefix, CancellationToken cancellationToken)
    {
        if (writes.Count == 0)
            return readPrefix is null ? Task.FromResult(new StoreResult(0, [])) : ReadAsync(readPrefix, cancellationToken);
        var txn = new TxnRequest();
        foreach (var w in writes)
        {
            var key = ByteString.CopyFromUtf8(w.Key);
            txn.Success.Add(w.Value is null
                ? new RequestOp { RequestDeleteRange = new DeleteRangeRequest { Key = key } }
                : new RequestOp { RequestPut = new PutRequest { Key = key, Value = UnsafeByteOperations.UnsafeWrap(w.Value), Lease = w.Lease } });
        }
        if (readPrefix is not null) txn.Success.Add(new RequestOp { RequestRange = RangeOf(readPrefix) });
        return CallAsync(readPrefix is null ? "writing lock keys" : "writing and reading lock keys", async (channel, options) =>
        {
            var response = await new KV.KVClient(channel).TxnAsync(txn, options).ResponseAsync.ConfigureAwait(false);
            var entries = readPrefix is null ? [] : Entries(response.Responses[^1].ResponseRange);
            return new StoreResult(response.Header.Revision, entries);
        }, cancellationToken);
    }

    /// <inheritdoc />
    public Task<StoreResult> ReadAsync(string prefix, CancellationToken cancellationToken) =>
        CallAsync("reading lock keys", async (channel, options) =>
        {
            var response = await new KV.KVClient(channel).RangeAsync(RangeOf(prefix), options).ResponseAsync.ConfigureAwait(false);
            return new StoreResult(response.Header.Revision, Entries(response));
        }, cancellationToken);

    private static RangeRequest RangeOf(string prefix) =>
        new() { Key = ByteString.CopyFromUtf8(prefix), RangeEnd = ByteString.CopyFrom(ClusterKeys.RangeEnd(prefix)) };

    private static List<StoreEntry> Entries(RangeResponse range) =>
        range.Kvs.Select(kv => new StoreEntry(kv.Key.ToStringUtf8(), kv.Value.ToByteArray(), kv.CreateRevision, kv.ModRevision, kv.Lease)).ToList();

    /// <inheritdoc />
    public async Task<long> KeepAliveAsync(long lease, CancellationToken cancellationToken)
    {
        await _keepAliveGate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            var failures = new List<string>();
            int start = Volatile.Read(ref _preferred);
            for (int k = 0; k < _endpoints.Length; k++)
            {
                int i = (start + k) % _endpoints.Length;
                using var attempt = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _disposed.Token);
                attempt.CancelAfter(_attemptTimeout);
                try
                {
                    if (_keepAlive is null || _keepAliveEndpoint != i)
                    {
                        _keepAlive?.Dispose();
                        _keepAlive = new Lease.LeaseClient(Channel(i)).LeaseKeepAlive(cancellationToken: _disposed.Token);
                        _keepAliveEndpoint = i;
                    }
                    await _keepAlive.RequestStream.WriteAsync(new LeaseKeepAliveRequest { ID = lease }, attempt.Token).ConfigureAwait(false);
                    while (await _keepAlive.ResponseStream.MoveNext(attempt.Token).ConfigureAwait(false))
                    {
                        var response = _keepAlive.ResponseStream.Current;
                        if (response.ID != lease) continue;
                        Volatile.Write(ref _preferred, i);
                        return Math.Max(0, response.TTL);
                    }
                    failures.Add($"{_endpoints[i]} (keep-alive stream ended)");
                }
                catch (Exception e) when (!cancellationToken.IsCancellationRequested && e is RpcException or OperationCanceledException or IOException or InvalidOperationException)
                {
                    failures.Add($"{_endpoints[i]} ({Describe(e)})");
                }
                _keepAlive?.Dispose();
                _keepAlive = null;
            }
            throw new ClusterUnavailableException($"etcd unreachable while renewing the lease: {string.Join(", ", failures)}");
        }
        finally
        {
            _keepAliveGate.Release();
        }
    }

    /// <inheritdoc />
    public async Task<long> WaitForChangeAsync(string prefix, long revision, string? ignoreSuffix, CancellationToken cancellationToken)
    {
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _disposed.Token);
        var token = linked.Token;
        int i = Volatile.Read(ref _preferred);
        while (true)
        {
            token.ThrowIfCancellationRequested();
            try
            {
                using var call = new Watch.WatchClient(Channel(i)).Watch(cancellationToken: token);
                await call.RequestStream.WriteAsync(new WatchRequest
                {
                    CreateRequest = new WatchCreateRequest
                    {
                        Key = ByteString.CopyFromUtf8(prefix),
                        RangeEnd = ByteString.CopyFrom(ClusterKeys.RangeEnd(prefix)),
                        StartRevision = revision + 1,
                    },
                }, token).ConfigureAwait(false);
                while (await call.ResponseStream.MoveNext(token).ConfigureAwait(false))
                {
                    var response = call.ResponseStream.Current;
                    // A compacted start revision means changes were missed: report one.
                    if (response.CompactRevision > 0) return response.CompactRevision;
                    if (response.Events.Any(e => ignoreSuffix is null || !e.Kv.Key.ToStringUtf8().EndsWith(ignoreSuffix, StringComparison.Ordinal))) return response.Header.Revision;
                    if (response.Canceled) break;
                }
            }
            catch (Exception e) when (!token.IsCancellationRequested && e is RpcException or IOException or InvalidOperationException)
            {
                // Try the next member after a pause; the caller's timeout bounds the wait.
            }
            i = (i + 1) % _endpoints.Length;
            await Task.Delay(TimeSpan.FromMilliseconds(200), token).ConfigureAwait(false);
        }
    }

    private async Task<T> CallAsync<T>(string what, Func<GrpcChannel, CallOptions, Task<T>> call, CancellationToken cancellationToken)
    {
        long stopAt = Stopwatch.GetTimestamp() + (long)(_operationTimeout.TotalSeconds * Stopwatch.Frequency);
        var failures = new Dictionary<Uri, string>();
        while (true)
        {
            bool someAnswered = false;
            int start = Volatile.Read(ref _preferred);
            for (int k = 0; k < _endpoints.Length; k++)
            {
                int i = (start + k) % _endpoints.Length;
                var left = Stopwatch.GetElapsedTime(Stopwatch.GetTimestamp(), stopAt);
                if (left <= TimeSpan.Zero) break;
                var deadline = DateTime.UtcNow + (left < _attemptTimeout ? left : _attemptTimeout);
                try
                {
                    var result = await call(Channel(i), new CallOptions(deadline: deadline, cancellationToken: cancellationToken)).ConfigureAwait(false);
                    Volatile.Write(ref _preferred, i);
                    return result;
                }
                catch (RpcException e) when (!cancellationToken.IsCancellationRequested && IsRetryable(e.StatusCode))
                {
                    failures[_endpoints[i]] = Describe(e);
                    // A member that answered (no leader yet, or slow) may work a moment later;
                    // one that refuses connections will not.
                    someAnswered |= e.StatusCode == StatusCode.DeadlineExceeded || e.Status.DebugException is null;
                }
                catch (OperationCanceledException e) when (!cancellationToken.IsCancellationRequested)
                {
                    // The attempt's deadline (the channel reports it as a cancellation): a member
                    // that accepted the connection and said nothing, which may answer later.
                    failures[_endpoints[i]] = Describe(e);
                    someAnswered = true;
                }
                catch (RpcException e) when (!cancellationToken.IsCancellationRequested)
                {
                    throw new ClusterLockException($"etcd at {_endpoints[i]} refused {what}: {Describe(e)}");
                }
            }
            if (!someAnswered || Stopwatch.GetTimestamp() >= stopAt)
                throw new ClusterUnavailableException($"etcd unreachable while {what}: " +
                    string.Join(", ", _endpoints.Select(e => $"{e.GetLeftPart(UriPartial.Authority)} ({failures.GetValueOrDefault(e, "not tried")})")));
            await Task.Delay(TimeSpan.FromMilliseconds(100), cancellationToken).ConfigureAwait(false);
        }
    }

    private static bool IsRetryable(StatusCode code) => code is StatusCode.Unavailable or StatusCode.DeadlineExceeded or StatusCode.Unknown
        or StatusCode.Internal or StatusCode.Aborted or StatusCode.Cancelled;

    /// <summary>The most telling text of a failed call: the socket error, else etcd's message.</summary>
    private string Describe(Exception e)
    {
        if (e is RpcException { StatusCode: StatusCode.DeadlineExceeded } or OperationCanceledException)
            return $"no answer within {_attemptTimeout.TotalSeconds.ToString(CultureInfo.InvariantCulture)} s";
        if (e is RpcException rpc)
        {
            var inner = rpc.Status.DebugException;
            while (inner?.InnerException is not null) inner = inner.InnerException;
            if (inner is not null) return inner.Message;
            return string.IsNullOrEmpty(rpc.Status.Detail) ? rpc.StatusCode.ToString() : rpc.Status.Detail;
        }
        return e.Message;
    }

    /// <inheritdoc />
    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed.IsCancellationRequested) return;
            _disposed.Cancel();
            _keepAlive?.Dispose();
            foreach (var c in _channels) c?.Dispose();
        }
    }
}
