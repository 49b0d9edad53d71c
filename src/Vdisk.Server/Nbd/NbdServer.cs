using System.Net.Sockets;
using Vdisk.Server.Daemon;

namespace Vdisk.Server.Nbd;

/// <summary>
/// The NBD server of a daemon (nbd-server-start): one listening socket, the exports by name,
/// and the connections. With <c>max-connections</c> set, it stops accepting while that many
/// clients are connected, as QEMU does.
/// </summary>
public sealed class NbdServer : IAsyncDisposable
{
    private readonly SocketListener _listener;
    private readonly Lock _lock = new();
    private readonly List<NbdExport> _exports = new();
    private readonly Dictionary<string, NbdExport> _exportsByName = new(StringComparer.Ordinal);
    private readonly HashSet<NbdConnection> _connections = new();
    private readonly HashSet<Task> _running = new();
    private readonly CancellationTokenSource _stopping = new();
    private readonly SemaphoreSlim? _connectionSlots;
    private Task? _acceptLoop;

    /// <summary>Binds the socket (unix sockets with mode 0600) without accepting yet.</summary>
    /// <exception cref="DaemonException">The address cannot be bound.</exception>
    public NbdServer(ListenAddress address, uint maxConnections)
    {
        _listener = SocketListener.Listen(address);
        MaxConnections = maxConnections;
        if (maxConnections > 0) _connectionSlots = new SemaphoreSlim((int)Math.Min(maxConnections, int.MaxValue));
    }

    /// <summary>Read and write payload buffers, shared by the connections.</summary>
    internal NbdPayloadBuffers PayloadBuffers { get; } = new();

    /// <summary>Where the server listens.</summary>
    public ListenAddress Address => _listener.Address;

    /// <summary>The connection limit; 0 means none.</summary>
    public uint MaxConnections { get; }

    /// <summary>
    /// Whether exports advertise MULTI_CONN: only when several connections may exist (QEMU 7.1
    /// does the same; max-connections=1 turns it off).
    /// </summary>
    public bool MultiConn => MaxConnections != 1;

    /// <summary>The exports, oldest first (the order of NBD_OPT_LIST).</summary>
    public IReadOnlyList<NbdExport> Exports
    {
        get
        {
            lock (_lock) return _exports.ToArray();
        }
    }

    /// <summary>Connections open now.</summary>
    public int ConnectionCount
    {
        get
        {
            lock (_lock) return _connections.Count;
        }
    }

    /// <summary>
    /// Raised once a connection has ended and no longer counts in <see cref="ConnectionCount"/>
    /// (qemu-nbd's nbd_client_closed: without <c>-t</c> it exits after the last negotiated client).
    /// </summary>
    public event Action<NbdConnection>? ConnectionClosed;

    /// <summary>Starts accepting clients on the thread pool (nbd-server-start).</summary>
    public void Start() => _acceptLoop ??= Task.Run(AcceptLoopAsync);

    /// <summary>
    /// Accepts clients on the calling thread, blocking in accept(2), until the server stops
    /// (<see cref="StopAccepting"/>, <see cref="StopAsync"/>). For a daemon's main thread, which
    /// has nothing else to do once start-up is done, as QEMU's main loop accepts: the first
    /// client is greeted straight from accept(2), not after the runtime has created the
    /// thread-pool threads that an asynchronous accept completes on (about 0.25 ms before
    /// the first greeting, a tenth of the time a daemon needs to start).
    /// </summary>
    /// <exception cref="InvalidOperationException">The server already accepts.</exception>
    public void AcceptOnCallingThread()
    {
        var loopEnded = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        if (Interlocked.CompareExchange(ref _acceptLoop, loopEnded.Task, null) is not null)
            throw new InvalidOperationException("The NBD server already accepts clients");
        var token = _stopping.Token;
        try
        {
            while (!token.IsCancellationRequested)
            {
                Socket client;
                try
                {
                    _connectionSlots?.Wait(token);
                    client = _listener.Socket.Accept();
                }
                catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException or SocketException)
                {
                    if (IsStoppedAfter(e, token)) return;
                    continue;
                }
                Admit(client, token);
            }
        }
        finally
        {
            loopEnded.SetResult();
        }
    }

    /// <summary>The export called <paramref name="name"/>, unless it is being deleted.</summary>
    public NbdExport? FindExport(string name)
    {
        lock (_lock) return _exportsByName.TryGetValue(name, out var export) && !export.ShuttingDown ? export : null;
    }

    /// <summary>Publishes an export under its name.</summary>
    /// <exception cref="DaemonException"><c>NBD server already has export named 'X'</c>.</exception>
    public void AddExport(NbdExport export)
    {
        lock (_lock)
        {
            if (!_exportsByName.TryAdd(export.Name, export))
                throw new DaemonException($"NBD server already has export named '{export.Name}'");
            _exports.Add(export);
        }
    }

    /// <summary>Withdraws an export (its clients must be gone or going).</summary>
    public void RemoveExport(NbdExport export)
    {
        lock (_lock)
        {
            if (_exports.Remove(export)) _exportsByName.Remove(export.Name);
        }
    }

    /// <summary>Asked for; the kernel caps it at net.core.wmem_max (and doubles it for its bookkeeping).</summary>
    private const int UnixSendBufferSize = 4 * 1024 * 1024;

    private async Task AcceptLoopAsync()
    {
        var token = _stopping.Token;
        while (!token.IsCancellationRequested)
        {
            Socket client;
            try
            {
                if (_connectionSlots is not null) await _connectionSlots.WaitAsync(token).ConfigureAwait(false);
                client = await _listener.Socket.AcceptAsync(token).ConfigureAwait(false);
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException or SocketException)
            {
                if (IsStoppedAfter(e, token)) return;
                continue;
            }
            Admit(client, token);
        }
    }

    /// <summary>
    /// After a failed accept (or a wait for a connection slot): whether the server is stopping.
    /// If not, the slot taken for the failed accept is given back and accepting goes on.
    /// </summary>
    private bool IsStoppedAfter(Exception acceptFailure, CancellationToken serverStopping)
    {
        if (serverStopping.IsCancellationRequested || acceptFailure is ObjectDisposedException) return true;
        _connectionSlots?.Release();
        return false;
    }

    /// <summary>
    /// Takes an accepted client on: its connection runs on the calling thread until its first
    /// wait (the greeting is sent by then), then on the thread pool.
    /// </summary>
    private void Admit(Socket client, CancellationToken serverStopping)
    {
        if (client.AddressFamily != AddressFamily.Unix) client.NoDelay = true;
        // A unix socket's default send buffer (wmem_default, ~208 KiB) is smaller than one
        // 256 KiB read reply, so every such reply went out in two sends with a wait for the
        // client in between. TCP sizes its buffers itself (setting one would stop that).
        else client.SendBufferSize = UnixSendBufferSize;
        var connection = new NbdConnection(this, client, serverStopping);
        lock (_lock) _connections.Add(connection);
        var run = RunConnectionAsync(connection);
        lock (_lock)
        {
            if (!run.IsCompleted) _running.Add(run);
        }
    }

    private async Task RunConnectionAsync(NbdConnection connection)
    {
        try
        {
            await connection.RunAsync().ConfigureAwait(false);
        }
        catch (Exception e)
        {
            // RunAsync answers its own faults; this only keeps a bug in its clean-up from
            // faulting a task that StopAsync awaits.
            Diagnostics.WarningSink?.Invoke($"NBD server: closing a connection failed: {NbdErrors.OneLine(e)}");
        }
        finally
        {
            lock (_lock)
            {
                _connections.Remove(connection);
                _running.RemoveWhere(t => t.IsCompleted);
            }
            _connectionSlots?.Release();
            ConnectionClosed?.Invoke(connection);
        }
    }

    /// <summary>
    /// Stops accepting and removes the socket file; connections go on. A thread blocked in
    /// <see cref="AcceptOnCallingThread"/> returns.
    /// </summary>
    public void StopAccepting()
    {
        _stopping.Cancel();
        _listener.Dispose();
    }

    /// <summary>
    /// Stops accepting, removes the socket file, ends every connection (requests in flight
    /// finish and answer first) and waits for them.
    /// </summary>
    public async Task StopAsync()
    {
        StopAccepting();
        if (_acceptLoop is not null)
        {
            try
            {
                await _acceptLoop.ConfigureAwait(false);
            }
            catch (OperationCanceledException) { }
        }
        NbdConnection[] connections;
        lock (_lock) connections = _connections.ToArray();
        foreach (var c in connections) c.Abort();
        while (true)
        {
            Task[] running;
            lock (_lock) running = _running.Where(t => !t.IsCompleted).ToArray();
            if (running.Length == 0 && ConnectionCount == 0) break;
            if (running.Length > 0) await Task.WhenAll(running).ConfigureAwait(false);
            else await Task.Delay(10).ConfigureAwait(false);
        }
    }

    /// <inheritdoc />
    public async ValueTask DisposeAsync() => await StopAsync().ConfigureAwait(false);
}
