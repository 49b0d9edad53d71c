using System.Net;
using System.Net.Sockets;

namespace Vdisk.Interop.Cluster;

/// <summary>
/// A TCP forwarder between a holder and one etcd member that the test can cut: a network
/// partition without network namespaces. Cut, it stops forwarding in both directions and keeps
/// the connections open without answering (packets "lost", no reset), and new connections are
/// accepted and left silent; the holder sees only time passing.
/// </summary>
public sealed class TcpProxy : IDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly IPEndPoint _target;
    private readonly CancellationTokenSource _stop = new();
    private readonly List<Socket> _sockets = new();
    private volatile bool _cut;
    private volatile int _cuts;

    public TcpProxy(Uri target)
    {
        _target = new IPEndPoint(IPAddress.Parse(target.Host), target.Port);
        _listener.Start();
        _ = AcceptLoopAsync();
    }

    /// <summary>The proxy's URL, to give the holder as its etcd endpoint.</summary>
    public string Url => $"http://127.0.0.1:{((IPEndPoint)_listener.LocalEndpoint).Port}";

    /// <summary>Bytes forwarded so far (both directions).</summary>
    public long BytesForwarded => Interlocked.Read(ref _forwarded);

    private long _forwarded;

    /// <summary>From now on nothing passes.</summary>
    public void Cut()
    {
        _cut = true;
        _cuts++;
    }

    /// <summary>New connections pass again; the ones open during the cut stay dead, as after a real partition.</summary>
    public void Heal() => _cut = false;

    private async Task AcceptLoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await _listener.AcceptSocketAsync(_stop.Token);
            }
            catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
            {
                return;
            }
            lock (_sockets) _sockets.Add(client);
            if (_cut) continue;
            var server = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            lock (_sockets) _sockets.Add(server);
            try
            {
                await server.ConnectAsync(_target, _stop.Token);
            }
            catch (Exception e) when (e is OperationCanceledException or SocketException)
            {
                client.Dispose();
                continue;
            }
            int epoch = _cuts;
            _ = PumpAsync(client, server, epoch);
            _ = PumpAsync(server, client, epoch);
        }
    }

    /// <summary>Forwards until the connection closes or a cut comes after <paramref name="epoch"/> (then it is a black hole for good).</summary>
    private async Task PumpAsync(Socket from, Socket to, int epoch)
    {
        var buffer = new byte[64 * 1024];
        try
        {
            while (true)
            {
                int n = await from.ReceiveAsync(buffer, SocketFlags.None, _stop.Token);
                if (n == 0 || _cuts != epoch) break;
                await to.SendAsync(buffer.AsMemory(0, n), SocketFlags.None, _stop.Token);
                Interlocked.Add(ref _forwarded, n);
            }
        }
        catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
        {
            return;
        }
        // Cut: swallow whatever arrives from now on, answer nothing, close nothing.
        if (_cuts != epoch)
        {
            try
            {
                while (await from.ReceiveAsync(buffer, SocketFlags.None, _stop.Token) > 0)
                {
                }
            }
            catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
            {
            }
            return;
        }
        try
        {
            to.Shutdown(SocketShutdown.Send);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
        }
    }

    public void Dispose()
    {
        _stop.Cancel();
        _listener.Stop();
        lock (_sockets)
            foreach (var s in _sockets) s.Dispose();
    }
}
