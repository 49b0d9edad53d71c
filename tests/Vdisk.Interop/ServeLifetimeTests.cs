using Vdisk.Inspection;
using Vdisk.Interop.Support;
using Vdisk.Native;
using Vdisk.Server.Nbd;
using Xunit;

namespace Vdisk.Interop;

/// <summary>How vdisk serve ends: cleanly on SIGTERM, SIGINT and quit; all at once on kill -9.</summary>
public class ServeLifetimeTests
{
    private static string[] Args(TempDir dir, string image) =>
    [
        .. Serve.Blockdevs(image, "raw"), .. Serve.NbdServer(dir.File("n.sock")), .. Serve.Export(writable: true),
        .. Serve.Monitor(dir.File("m.sock")), "--pidfile", dir.File("serve.pid"),
    ];

    private static int LocksOn(string image)
    {
        ulong inode = FileSystemEntry.IdentityOf(image)!.Value.Inode;
        return KernelLock.ReadProcLocks().Count(l => l.File.Inode == inode);
    }

    [Theory]
    [InlineData("TERM")]
    [InlineData("INT")]
    public void Signal_StopsCleanly_AfterAnsweringAndFlushing(string signal)
    {
        using var dir = new TempDir();
        var image = dir.RawImage();
        using var d = Daemon.Vdisk(Args(dir, image), dir.File("n.sock"), dir.File("m.sock"));
        // The pid file is written once every option has been applied, so it signals readiness.
        Poll.Until(() => File.Exists(dir.File("serve.pid")) && File.ReadAllText(dir.File("serve.pid")).EndsWith('\n'), () => "no complete pid file");
        Assert.Equal(d.Pid.ToString(System.Globalization.CultureInfo.InvariantCulture) + "\n", File.ReadAllText(dir.File("serve.pid")));
        using var c = new NbdClient(dir.File("n.sock"));
        c.Open("disk");
        c.SendRequest(NbdCommand.Write, 1, 4096, 4096, payload: Enumerable.Repeat((byte)0x42, 4096).ToArray());
        Assert.Equal(NbdError.None, c.ReadReply().ErrorNumber);

        Assert.Equal(0, d.Signal(signal));
        Assert.True(c.IsClosedByServer());
        Assert.False(File.Exists(dir.File("n.sock")));
        Assert.False(File.Exists(dir.File("m.sock")));
        Assert.False(File.Exists(dir.File("serve.pid")));
        Assert.Equal(0, LocksOn(image));
        var check = Programs.Run("qemu-io", "-f", "raw", image, "-c", "read -P 0x42 4096 4096");
        Assert.True(check.ExitCode == 0 && !check.Stdout.Contains("Pattern verification failed"), check.ToString());
    }

    [Fact]
    public void Signal_WhileNoClientIsConnected_StopsCleanly()
    {
        // The main thread then waits in accept(2) on the NBD socket; the signal has to wake it
        // and the socket file must be gone before the process exits. Three rounds: the file
        // outliving the process was a race between the two threads, lost about half the time.
        using var dir = new TempDir();
        var image = dir.RawImage();
        string socket = dir.File("n.sock");
        for (int round = 0; round < 3; round++)
        {
            using var d = Daemon.Vdisk([.. Serve.Blockdevs(image, "raw"), .. Serve.NbdServer(socket), .. Serve.Export(writable: true)], socket);
            Assert.Equal(0, d.Signal("TERM"));
            Assert.False(File.Exists(socket), $"round {round}: the socket file outlived the daemon");
            Assert.Equal(0, LocksOn(image));
        }
    }

    [Fact]
    public void Quit_StopsCleanly()
    {
        using var dir = new TempDir();
        var image = dir.RawImage();
        using var d = Daemon.Vdisk(Args(dir, image), dir.File("n.sock"), dir.File("m.sock"));
        using var q = QmpClient.Connect(dir.File("m.sock"));
        Assert.Equal("{\"return\": {}}", q.Execute("{\"execute\": \"quit\"}"));
        Assert.Equal(0, d.WaitForExit());
        Assert.False(File.Exists(dir.File("n.sock")));
        Assert.False(File.Exists(dir.File("serve.pid")));
        Assert.Equal(0, LocksOn(image));
    }

    [Fact]
    public void Kill9_FreesEveryLockAtOnce()
    {
        using var dir = new TempDir();
        var images = Enumerable.Range(0, 3).Select(i => dir.RawImage($"d{i}.raw")).ToArray();
        var args = new List<string>();
        for (int i = 0; i < images.Length; i++) args.AddRange(Serve.Blockdevs(images[i], "raw", node: $"d{i}"));
        args.AddRange(Serve.NbdServer(dir.File("n.sock")));
        for (int i = 0; i < images.Length; i++) args.AddRange(Serve.Export(node: $"d{i}", name: $"d{i}", id: $"e{i}", writable: true));
        args.AddRange(Serve.Monitor(dir.File("m.sock")));
        using var d = Daemon.Vdisk(args, dir.File("m.sock"));
        Assert.All(images, image => Assert.Equal("100,101,201", LockBytesHeld.Describe(LockBytesHeld.Read(d.Pid, image))));
        d.Signal("KILL");
        Assert.All(images, image => Assert.Equal(0, LocksOn(image)));
        Assert.All(images, image => Assert.Equal("ok", Outcome.Of(Programs.Run("qemu-io", "-f", "raw", image, "-c", "write 0 4k"))));
    }

    [Fact]
    public void SocketsAreOwnerOnly()
    {
        using var dir = new TempDir();
        var image = dir.RawImage();
        using var d = Daemon.Vdisk(Args(dir, image), dir.File("n.sock"), dir.File("m.sock"));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(dir.File("n.sock")));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(dir.File("m.sock")));
    }

    [Fact]
    public void StaleSocketIsReplaced_LiveOneAndOtherFilesAreNot()
    {
        using var dir = new TempDir();
        var image = dir.RawImage();
        string socket = dir.File("n.sock");
        // A socket file left by a killed daemon is replaced.
        using (var first = Daemon.Vdisk([.. Serve.NbdServer(socket)], socket)) first.Signal("KILL");
        Assert.True(File.Exists(socket));
        using var second = Daemon.Vdisk([.. Serve.NbdServer(socket)], socket);
        // A live one is not.
        var r = Programs.Run(Programs.Vdisk, "serve", "--nbd-server", $"addr.type=unix,addr.path={socket}");
        Assert.Equal((1, $"vdisk: --nbd-server addr.type=unix,addr.path={socket}: Failed to bind socket to {socket}: Address already in use\n"), (r.ExitCode, r.Stderr));
        // Nor is a regular file.
        var file = dir.File("not-a-socket");
        File.WriteAllText(file, "keep me");
        r = Programs.Run(Programs.Vdisk, "serve", "--nbd-server", $"addr.type=unix,addr.path={file}");
        Assert.Equal(1, r.ExitCode);
        Assert.Equal("keep me", File.ReadAllText(file));
    }
}
