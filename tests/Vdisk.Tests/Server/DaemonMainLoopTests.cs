using System.Net.Sockets;
using System.Text;
using Vdisk.Server.Daemon;
using Xunit;

namespace Vdisk.Tests.Server;

/// <summary>
/// The daemon's main loop (<see cref="StorageDaemon.RunMainLoop"/>): the command line's NBD server
/// accepts on the calling thread until told to stop, and never blocks a thread-pool thread.
/// </summary>
public sealed class DaemonMainLoopTests : IDisposable
{
    private static readonly TimeSpan s_deadline = TimeSpan.FromSeconds(30);
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("vdisk-mainloop-");

    public void Dispose() => _dir.Delete(recursive: true);

    private string SocketPath => Path.Combine(_dir.FullName, "n.sock");

    /// <summary>Connects and returns the first 8 bytes the server sends.</summary>
    private string Greeting()
    {
        using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        socket.ReceiveTimeout = (int)s_deadline.TotalMilliseconds;
        socket.Connect(new UnixDomainSocketEndPoint(SocketPath));
        var magic = new byte[8];
        int got = 0;
        while (got < magic.Length)
        {
            int n = socket.Receive(magic, got, magic.Length - got, SocketFlags.None);
            if (n == 0) break;
            got += n;
        }
        return Encoding.ASCII.GetString(magic, 0, got);
    }

    private StorageDaemon StartedDaemon()
    {
        var daemon = new StorageDaemon();
        daemon.BeginStartup();
        daemon.StartNbdServer(new NbdServerRequest(new UnixListenAddress(SocketPath), 0));
        return daemon;
    }

    /// <summary>Runs the main loop on a thread of its own, as the process's main thread would.</summary>
    private static Thread RunOnOwnThread(StorageDaemon daemon, Task until)
    {
        var thread = new Thread(() => daemon.RunMainLoop(until));
        thread.Start();
        return thread;
    }

    [Fact]
    public async Task CommandLineServer_AcceptsUntilTheTaskCompletes_ThenTheSocketIsGone()
    {
        await using var daemon = StartedDaemon();
        var stop = new TaskCompletionSource();
        var mainLoop = RunOnOwnThread(daemon, stop.Task);

        Assert.Equal("NBDMAGIC", Greeting());
        Assert.Equal("NBDMAGIC", Greeting());
        Assert.True(mainLoop.IsAlive);

        stop.SetResult();
        Assert.True(mainLoop.Join(s_deadline), "the main loop did not return once its task completed");
        Assert.False(File.Exists(SocketPath));
    }

    [Fact]
    public async Task NbdServerStop_EndsTheMainLoop()
    {
        await using var daemon = StartedDaemon();
        var never = new TaskCompletionSource();
        var mainLoop = RunOnOwnThread(daemon, never.Task);
        Assert.Equal("NBDMAGIC", Greeting());

        await daemon.StopNbdServerAsync();
        Assert.True(mainLoop.Join(s_deadline), "the main loop did not return after nbd-server-stop");
        Assert.False(File.Exists(SocketPath));
    }

    [Fact]
    public async Task OnAThreadPoolThread_ReturnsAtOnce_AndTheServerStillAccepts()
    {
        await using var daemon = StartedDaemon();
        var never = new TaskCompletionSource();
        var returned = Task.Run(() => daemon.RunMainLoop(never.Task));
        Assert.Same(returned, await Task.WhenAny(returned, Task.Delay(s_deadline)));
        Assert.Equal("NBDMAGIC", Greeting());
    }

    [Fact]
    public async Task WithoutACommandLineServer_ReturnsAtOnce()
    {
        await using var daemon = new StorageDaemon();
        daemon.BeginStartup();
        var never = new TaskCompletionSource();
        var mainLoop = RunOnOwnThread(daemon, never.Task);
        Assert.True(mainLoop.Join(s_deadline), "the main loop waited with nothing to accept");
    }
}
