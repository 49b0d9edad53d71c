using System.Net.Sockets;
using Vdisk.Options;
using Vdisk.Server.Daemon;

namespace Vdisk.Server.Qmp;

/// <summary>
/// A QMP monitor on a listening socket. Unlike QEMU's chardev (one client at a time, the
/// others waiting in the backlog), every client is served at once; each has its own
/// capabilities negotiation, and events go to all that finished it.
/// </summary>
public sealed class QmpServer
{
    private readonly StorageDaemon _daemon;
    private readonly Lock _lock = new();
    private readonly HashSet<QmpSession> _sessions = new();
    private readonly List<Task> _running = new();
    private readonly CancellationTokenSource _stopping = new();
    private Task? _acceptLoop;

    /// <summary>Serves QMP for <paramref name="daemon"/> on <paramref name="listener"/>.</summary>
    public QmpServer(SocketListener listener, StorageDaemon daemon)
    {
        Listener = listener;
        _daemon = daemon;
    }

    /// <summary>The socket it serves.</summary>
    public SocketListener Listener { get; }

    /// <summary>
    /// Starts accepting clients: on the calling thread until the first accept waits (a caller
    /// that holds no lock and has nothing else to do), or else on the thread pool.
    /// </summary>
    public void Start(bool onCallingThread = false) => _acceptLoop ??= onCallingThread ? AcceptLoopAsync() : Task.Run(AcceptLoopAsync);

    private async Task AcceptLoopAsync()
    {
        var token = _stopping.Token;
        while (!token.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await Listener.Socket.AcceptAsync(token).ConfigureAwait(false);
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException or SocketException)
            {
                if (token.IsCancellationRequested || e is ObjectDisposedException) return;
                continue;
            }
            var session = new QmpSession(client, _daemon);
            lock (_lock)
            {
                _sessions.Add(session);
                _running.RemoveAll(t => t.IsCompleted);
                _running.Add(RunSessionAsync(session, token));
            }
        }
    }

    private async Task RunSessionAsync(QmpSession session, CancellationToken token)
    {
        try
        {
            await session.RunAsync(token).ConfigureAwait(false);
        }
        finally
        {
            lock (_lock) _sessions.Remove(session);
        }
    }

    /// <summary>Queues an event for every negotiated client.</summary>
    public void Broadcast(string name, OptionDict data)
    {
        QmpSession[] sessions;
        lock (_lock) sessions = _sessions.ToArray();
        foreach (var s in sessions) s.SendEvent(name, data);
    }

    /// <summary>Stops accepting and ends every session.</summary>
    public async Task StopAsync()
    {
        _stopping.Cancel();
        Listener.Dispose();
        if (_acceptLoop is not null) await _acceptLoop.ConfigureAwait(false);
        Task[] running;
        lock (_lock) running = _running.ToArray();
        await Task.WhenAll(running).ConfigureAwait(false);
    }
}
