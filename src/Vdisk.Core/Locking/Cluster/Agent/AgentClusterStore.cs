using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;

namespace Vdisk.Locking.Cluster.Agent;

/// <summary>
/// <see cref="IClusterStore"/> through the etcd helper <c>vdisk-etcd</c>, a child process that
/// holds the gRPC client. The etcd client (gRPC, HTTP/2, Protobuf) is a third of the types in a
/// binary that carries it, and NativeAOT sets up every type's statics at each start: in the
/// helper, only runs that use cluster locks pay for it (docs/architecture.md, "Start-up").
/// The helper is started at the first call, not by the constructor; it ends when its standard
/// input closes (this store disposed, or this process gone).
/// </summary>
public sealed class AgentClusterStore : IClusterStore
{
    /// <summary>The helper's file name, looked for next to the running executable.</summary>
    public const string HelperName = "vdisk-etcd";

    /// <summary>Overrides where the helper is (a path), e.g. for a build tree laid out differently.</summary>
    public const string HelperVariable = "VDISK_ETCD_AGENT";

    private readonly ClusterLockSettings _settings;
    private readonly Func<ClusterLockSettings, AgentChannel> _launch;
    private readonly Lock _gate = new();
    private readonly ConcurrentDictionary<long, TaskCompletionSource<AgentResponse>> _pending = new();
    private readonly SemaphoreSlim _writeGate = new(1, 1);
    private AgentChannel? _channel;
    /// <summary>The reader of the helper's answers (it records why the helper ended).</summary>
    private Task? _answers;
    private Exception? _broken;
    private long _nextId;
    private bool _disposed;

    /// <summary>A store for the settings' endpoints, through the helper found by <see cref="HelperPath"/>.</summary>
    public AgentClusterStore(ClusterLockSettings settings) : this(settings, s => AgentChannel.StartHelper(s, HelperPath()))
    {
    }

    /// <summary>A store whose helper <paramref name="launch"/> starts (tests give an in-process one).</summary>
    public AgentClusterStore(ClusterLockSettings settings, Func<ClusterLockSettings, AgentChannel> launch)
    {
        if (settings.Endpoints.Count == 0) throw new ArgumentException("no etcd endpoints", nameof(settings));
        _settings = settings;
        _launch = launch;
    }

    /// <summary>Where the helper is: <c>$VDISK_ETCD_AGENT</c>, else <c>vdisk-etcd</c> beside this executable.</summary>
    public static string HelperPath() =>
        Environment.GetEnvironmentVariable(HelperVariable) is { Length: > 0 } path ? path
            : Path.Combine(Path.GetDirectoryName(Environment.ProcessPath) ?? ".", HelperName);

    /// <inheritdoc />
    public IReadOnlyList<Uri> Endpoints => _settings.Endpoints;

    /// <inheritdoc />
    public async Task<StoreLease> GrantLeaseAsync(long ttlSeconds, CancellationToken cancellationToken)
    {
        var r = await CallAsync(id => new AgentRequest(id, AgentOperation.Grant, ttlSeconds), cancellationToken).ConfigureAwait(false);
        return new StoreLease(r.Number, r.Ttl);
    }

    /// <inheritdoc />
    public async Task<long> KeepAliveAsync(long lease, CancellationToken cancellationToken) =>
        (await CallAsync(id => new AgentRequest(id, AgentOperation.KeepAlive, lease), cancellationToken).ConfigureAwait(false)).Number;

    /// <inheritdoc />
    public Task RevokeLeaseAsync(long lease, CancellationToken cancellationToken) =>
        CallAsync(id => new AgentRequest(id, AgentOperation.Revoke, lease), cancellationToken);

    /// <inheritdoc />
    public async Task<long> LeaseTimeToLiveAsync(long lease, CancellationToken cancellationToken) =>
        (await CallAsync(id => new AgentRequest(id, AgentOperation.TimeToLive, lease), cancellationToken).ConfigureAwait(false)).Number;

    /// <inheritdoc />
    public async Task<StoreResult> CommitAsync(IReadOnlyList<StoreWrite> writes, string? readPrefix, CancellationToken cancellationToken)
    {
        var r = await CallAsync(id => new AgentRequest(id, AgentOperation.Commit, Prefix: readPrefix, Writes: writes), cancellationToken).ConfigureAwait(false);
        return new StoreResult(r.Revision, r.Entries ?? []);
    }

    /// <inheritdoc />
    public async Task<StoreResult> ReadAsync(string prefix, CancellationToken cancellationToken)
    {
        var r = await CallAsync(id => new AgentRequest(id, AgentOperation.Read, Prefix: prefix), cancellationToken).ConfigureAwait(false);
        return new StoreResult(r.Revision, r.Entries ?? []);
    }

    /// <inheritdoc />
    public async Task<long> WaitForChangeAsync(string prefix, long revision, string? ignoreSuffix, CancellationToken cancellationToken) =>
        (await CallAsync(id => new AgentRequest(id, AgentOperation.WaitForChange, revision, prefix, ignoreSuffix), cancellationToken).ConfigureAwait(false)).Number;

    private async Task<AgentResponse> CallAsync(Func<long, AgentRequest> make, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        var channel = Channel();
        long id = Interlocked.Increment(ref _nextId);
        var answer = new TaskCompletionSource<AgentResponse>(TaskCreationOptions.RunContinuationsAsynchronously);
        _pending[id] = answer;
        // The reader may have failed everything pending just before this request was added.
        if (Volatile.Read(ref _broken) is { } broken && _pending.TryRemove(id, out _)) throw Rethrowable(broken);
        try
        {
            await SendAsync(channel, make(id)).ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException)
        {
            _pending.TryRemove(id, out _);
            // A helper that ended before reading the request breaks the pipe before its answer
            // reader sees the end of its output: what ended it (its exit status) is the telling
            // message, so give the reader a moment to record it.
            if (Volatile.Read(ref _broken) is null && Volatile.Read(ref _answers) is { } answers)
                await answers.WaitAsync(TimeSpan.FromSeconds(2)).ContinueWith(static _ => { }, TaskScheduler.Default).ConfigureAwait(false);
            throw Rethrowable(Volatile.Read(ref _broken) ?? Unavailable($"took no request: {e.Message}"));
        }
        using (cancellationToken.Register(() =>
        {
            if (!_pending.TryRemove(id, out var waiting)) return;
            waiting.TrySetCanceled(cancellationToken);
            // The helper stops the call; its "canceled" answer finds nobody waiting.
            _ = SendCancelAsync(channel, id);
        }))
        {
            var response = await answer.Task.ConfigureAwait(false);
            if (response.ToException(cancellationToken) is { } error) throw error;
            return response;
        }
    }

    private async Task SendCancelAsync(AgentChannel channel, long id)
    {
        try
        {
            await SendAsync(channel, new AgentRequest(id, AgentOperation.Cancel)).ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException)
        {
            // The helper is gone: nothing is running there to cancel.
        }
    }

    private async Task SendAsync(AgentChannel channel, AgentRequest request)
    {
        await _writeGate.WaitAsync(CancellationToken.None).ConfigureAwait(false);
        try
        {
            await AgentFrames.WriteAsync(channel.ToAgent, request.Encode(), CancellationToken.None).ConfigureAwait(false);
        }
        finally
        {
            _writeGate.Release();
        }
    }

    /// <summary>The helper's channel, started at the first call.</summary>
    private AgentChannel Channel()
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_broken is { } broken) throw Rethrowable(broken);
            if (_channel is not null) return _channel;
            var channel = _launch(_settings);
            _channel = channel;
            _answers = Task.Run(() => ReadAnswersAsync(channel));
            return channel;
        }
    }

    private async Task ReadAnswersAsync(AgentChannel channel)
    {
        Exception ended;
        try
        {
            while (await AgentFrames.ReadAsync(channel.FromAgent, CancellationToken.None).ConfigureAwait(false) is { } frame)
            {
                var response = AgentResponse.Decode(frame);
                if (_pending.TryRemove(response.Id, out var waiting)) waiting.TrySetResult(response);
            }
            ended = Unavailable(channel.DescribeExit());
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException)
        {
            ended = Unavailable(e is AgentProtocolException ? $"failed: {e.Message}" : channel.DescribeExit());
        }
        lock (_gate)
        {
            if (_disposed) ended = new ObjectDisposedException(nameof(AgentClusterStore));
            _broken ??= ended;
            ended = _broken;
        }
        foreach (var id in _pending.Keys)
        {
            if (_pending.TryRemove(id, out var waiting)) waiting.TrySetException(Rethrowable(ended));
        }
    }

    private ClusterUnavailableException Unavailable(string what) =>
        new($"etcd unreachable: the etcd helper {HelperName} {what}");

    /// <summary>A fresh exception of the same kind and message (one instance must not be thrown by many callers).</summary>
    private static Exception Rethrowable(Exception e) => e switch
    {
        ClusterUnavailableException => new ClusterUnavailableException(e.Message),
        ClusterLockException => new ClusterLockException(e.Message),
        ObjectDisposedException => new ObjectDisposedException(nameof(AgentClusterStore)),
        _ => new ClusterLockException(e.Message),
    };

    /// <summary>Ends the helper: its input closes, it cancels what it runs and exits; it is waited for.</summary>
    public void Dispose()
    {
        AgentChannel? channel;
        lock (_gate)
        {
            if (_disposed) return;
            _disposed = true;
            channel = _channel;
        }
        channel?.Dispose();
        foreach (var id in _pending.Keys)
        {
            if (_pending.TryRemove(id, out var waiting)) waiting.TrySetException(new ObjectDisposedException(nameof(AgentClusterStore)));
        }
    }
}

/// <summary>
/// The two byte streams to and from an etcd helper, and its end: a child process
/// (<see cref="StartHelper"/>) or, in tests, something in process.
/// </summary>
/// <param name="toAgent">Requests go here; disposing it tells the helper to end.</param>
/// <param name="fromAgent">Responses come from here.</param>
/// <param name="describeExit">Says how the helper ended ("exited with status 1"), once its output has ended.</param>
/// <param name="end">Waits for the helper to end after its input closed (and stops it if it does not).</param>
public sealed class AgentChannel(Stream toAgent, Stream fromAgent, Func<string> describeExit, Action end) : IDisposable
{
    private int _disposed;

    /// <summary>Requests go here.</summary>
    public Stream ToAgent => toAgent;

    /// <summary>Responses come from here.</summary>
    public Stream FromAgent => fromAgent;

    /// <summary>How the helper ended.</summary>
    public string DescribeExit() => describeExit();

    /// <summary>Starts the helper at <paramref name="path"/> with the settings' endpoints and timeouts.</summary>
    /// <exception cref="ClusterLockException">The helper is missing or cannot be started (the message names the path).</exception>
    public static AgentChannel StartHelper(ClusterLockSettings settings, string path)
    {
        if (!File.Exists(path))
            throw new ClusterLockException($"cluster locks need {AgentClusterStore.HelperName}: {path}: No such file or directory");
        var start = new ProcessStartInfo(path)
        {
            UseShellExecute = false,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            // Through vdisk, not inherited: a daemon (serve --daemonize, qemu-nbd --fork) sends its
            // stderr to /dev/null once ready, and a helper holding the original would keep whoever
            // started the daemon waiting for the end of that pipe.
            RedirectStandardError = true,
        };
        foreach (string arg in AgentArguments.Format(settings)) start.ArgumentList.Add(arg);
        Process process;
        try
        {
            process = Process.Start(start) ?? throw new ClusterLockException($"cluster locks need {AgentClusterStore.HelperName}: {path} did not start");
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new ClusterLockException($"cluster locks need {AgentClusterStore.HelperName}: {path}: {e.Message}");
        }
        var errors = Task.Run(() => ForwardErrorsAsync(process.StandardError));
        return new AgentChannel(process.StandardInput.BaseStream, process.StandardOutput.BaseStream,
            () =>
            {
                bool exited = process.WaitForExit(TimeSpan.FromSeconds(2));
                // The helper's last words come before what vdisk says of its end.
                errors.Wait(TimeSpan.FromSeconds(1));
                return exited ? $"exited with status {process.ExitCode.ToString(CultureInfo.InvariantCulture)}" : "closed its output";
            },
            () =>
            {
                if (!process.WaitForExit(TimeSpan.FromSeconds(5))) process.Kill();
                process.WaitForExit();
                errors.Wait(TimeSpan.FromSeconds(1));
                process.Dispose();
            });
    }

    /// <summary>
    /// The helper's stderr, line by line, to vdisk's: wherever that is now (a daemon's is /dev/null
    /// once it is ready). Console.Error is synchronized, so this thread may write to it.
    /// </summary>
    private static async Task ForwardErrorsAsync(StreamReader errors)
    {
        try
        {
            while (await errors.ReadLineAsync().ConfigureAwait(false) is { } line)
                Console.Error.Write(line + "\n");
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException)
        {
            // The pipe went with the helper.
        }
    }

    /// <summary>Closes the helper's input and waits for it to end.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        try
        {
            toAgent.Dispose();
        }
        catch (IOException)
        {
            // Already gone (broken pipe on the final flush).
        }
        end();
        fromAgent.Dispose();
    }
}
