using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text.RegularExpressions;
using Vdisk.Interop.Support;
using Xunit;

namespace Vdisk.Interop.Nbd;

/// <summary>
/// vdisk as an NBD client, against real qemu-nbd, qemu-storage-daemon and vdisk serve over Unix
/// sockets and TCP: every verb that takes an image is run by vdisk and by qemu-img/qemu-io on the
/// same export, and what the user sees (stdout, stderr, exit code) must be the same.
/// </summary>
public partial class NbdClientTests
{
    public static TheoryData<string> Servers => new() { "qemu-nbd", "qemu-nbd-tcp", "qsd", "vdisk", "vdisk-tcp" };

    /// <summary>A running NBD server exporting <c>disk</c>.</summary>
    private sealed class Server(IDisposable process, string uri, string? socket) : IDisposable
    {
        public string Uri { get; } = uri;
        public string? Socket { get; } = socket;
        public IDisposable Process { get; } = process;
        public void Dispose() => Process.Dispose();
    }

    private static int FreePort()
    {
        using var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }

    private static void WaitForTcp(int port, Daemon daemon)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (true)
        {
            try
            {
                using var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                s.Connect(IPAddress.Loopback, port);
                return;
            }
            catch (SocketException) when (DateTime.UtcNow < deadline && !daemon.HasExited)
            {
                Thread.Sleep(10); // polling with a deadline: the daemon has no other readiness signal on TCP
            }
        }
    }

    private static Server Start(string kind, TempDir dir, string image, bool writable)
    {
        string socket = dir.File(kind + ".sock");
        switch (kind)
        {
            case "qemu-nbd":
                return new Server(Daemon.Start("qemu-nbd", ["-t", "-f", "raw", "-x", "disk", "-k", socket, .. writable ? Array.Empty<string>() : ["-r"], image], socket),
                    $"nbd+unix:///disk?socket={socket}", socket);
            case "qemu-nbd-tcp":
            {
                int port = FreePort();
                var d = Daemon.Start("qemu-nbd", ["-t", "-f", "raw", "-x", "disk", "-b", "127.0.0.1", "-p", port.ToString(CultureInfo.InvariantCulture), .. writable ? Array.Empty<string>() : ["-r"], image]);
                WaitForTcp(port, d);
                return new Server(d, $"nbd://127.0.0.1:{port}/disk", null);
            }
            case "qsd":
                return new Server(Daemon.Qsd([.. Serve.Blockdevs(image, "raw"), .. Serve.NbdServer(socket), .. Serve.Export(writable: writable)], socket),
                    Serve.Uri(socket), socket);
            case "vdisk":
                return new Server(Daemon.Vdisk([.. Serve.Blockdevs(image, "raw"), .. Serve.NbdServer(socket), .. Serve.Export(writable: writable)], socket),
                    Serve.Uri(socket), socket);
            case "vdisk-tcp":
            {
                int port = FreePort();
                var d = Daemon.Vdisk([.. Serve.Blockdevs(image, "raw"), "--nbd-server", $"addr.type=inet,addr.host=127.0.0.1,addr.port={port}", .. Serve.Export(writable: writable)]);
                WaitForTcp(port, d);
                return new Server(d, $"nbd://127.0.0.1:{port}/disk", null);
            }
            default:
                throw new ArgumentException(kind);
        }
    }

    /// <summary>What a user sees, with the program name and qemu-io's timing figures taken out.</summary>
    private static string Seen(RunResult r) =>
        $"exit {r.ExitCode}\n--- stdout\n{Timing().Replace(r.Stdout, "TIMING")}--- stderr\n{Prefix().Replace(r.Stderr, "PROG: ")}";

    [GeneratedRegex(@"^(qemu-img|qemu-io|vdisk): ", RegexOptions.Multiline)]
    private static partial Regex Prefix();

    [GeneratedRegex(@"^\S+ \S+, \d+ ops; .*$", RegexOptions.Multiline)]
    private static partial Regex Timing();

    private static void SameAsQemu(string qemuProgram, string[] qemuArgs, string[] vdiskArgs)
    {
        var qemu = Programs.Run(qemuProgram, qemuArgs);
        var vdisk = Programs.Run(Programs.Vdisk, vdiskArgs);
        Assert.Equal(Seen(qemu), Seen(vdisk));
    }

    private static void SameAsQemuImg(params string[] args) => SameAsQemu("qemu-img", args, args);

    private static void SameAsQemuIo(params string[] args) => SameAsQemu("qemu-io", args, ["io", .. args]);

    [Theory]
    [MemberData(nameof(Servers))]
    public void InfoMapCompareAndIo_OverNbd_MatchQemu(string kind)
    {
        using var dir = new TempDir();
        var image = Serve.PatternedRaw(dir);
        using var server = Start(kind, dir, image, writable: false);
        string uri = server.Uri;
        SameAsQemuImg("info", uri);
        SameAsQemuImg("info", "--output=json", uri);
        SameAsQemuImg("info", "-f", "nbd", uri);
        SameAsQemuImg("map", uri);
        SameAsQemuImg("map", "--output=json", "-f", "raw", uri);
        SameAsQemuImg("compare", "-f", "raw", "-F", "raw", uri, image);
        SameAsQemuImg("compare", "-f", "raw", "-F", "raw", uri, Serve.PatternedQcow2(dir));
        SameAsQemuIo("-r", "-f", "raw", "-c", "read -P 0xab 0 64k", "-c", "read -P 0 64k 64k", "-c", "read -P 0xcd 1M 64k", "-c", "map", uri);
        if (server.Socket is { } socket)
        {
            SameAsQemuImg("info", $"nbd:unix:{socket}:exportname=disk");
            SameAsQemuImg("info", "--image-opts", $"driver=nbd,server.type=unix,server.path={socket},export=disk");
            SameAsQemuImg("map", "--output=json", "--image-opts", $"driver=raw,file.driver=nbd,file.path={socket},file.export=disk");
            SameAsQemuImg("info", $"json:{{\"driver\":\"raw\",\"file\":{{\"driver\":\"nbd\",\"server\":{{\"type\":\"unix\",\"path\":\"{socket}\"}},\"export\":\"disk\"}}}}");
        }
    }

    [Theory]
    [MemberData(nameof(Servers))]
    public void Convert_FromNbd_IsSparseAndEqual_LikeQemuImg(string kind)
    {
        using var dir = new TempDir();
        var image = Serve.PatternedRaw(dir);
        using var server = Start(kind, dir, image, writable: false);
        foreach (var format in new[] { "qcow2", "raw" })
        {
            string mine = dir.File("v." + format), theirs = dir.File("q." + format);
            var r = Programs.Run(Programs.Vdisk, "convert", "-O", format, server.Uri, mine);
            Assert.True(r.ExitCode == 0, r.ToString());
            Serve.Check(Programs.Run("qemu-img", "convert", "-O", format, server.Uri, theirs));
            Assert.Equal("Images are identical.\n", Programs.Run("qemu-img", "compare", "-f", format, "-F", "raw", mine, image).Stdout);
            // Sparse: the same allocation as qemu-img's copy, holes left unwritten.
            Assert.Equal(Programs.Run("qemu-img", "map", "--output=json", "-f", format, theirs).Stdout,
                Programs.Run("qemu-img", "map", "--output=json", "-f", format, mine).Stdout);
        }
    }

    /// <summary>A 4 MiB raw image full of 0xee, so that a convert that skips zeroes shows through.</summary>
    private static string FilledTarget(TempDir dir, string name)
    {
        var path = dir.RawImage(name, 4 << 20);
        Serve.Check(Programs.Run("qemu-io", "-f", "raw", path, "-c", "write -P 0xee 0 4M"));
        return path;
    }

    [Theory]
    [MemberData(nameof(Servers))]
    public void ConvertAndCreate_ToNbd_LikeQemuImg(string kind)
    {
        using var dir = new TempDir();
        var source = Serve.PatternedRaw(dir, "src.raw", 2 << 20);
        var large = dir.RawImage("large.raw", 8 << 20);
        var mineImage = FilledTarget(dir, "mine.raw");
        var theirsImage = FilledTarget(dir, "theirs.raw");
        using (var mine = Start(kind, dir, mineImage, writable: true))
        {
            var r = Programs.Run(Programs.Vdisk, "convert", "-O", "raw", source, mine.Uri);
            Assert.True(r.ExitCode == 0, r.ToString());
            // Holes of the source were written as zeroes over the 0xee (an export is not zero-initialised).
            Assert.Contains("Content mismatch at offset 2097152!", Programs.Run("qemu-img", "compare", "-f", "raw", "-F", "raw", source, mine.Uri).Stdout);
            r = Programs.Run(Programs.Vdisk, "convert", "-n", "-O", "raw", source, mine.Uri);
            Assert.True(r.ExitCode == 0, r.ToString());
        }
        using (var theirs = Start(kind, dir, theirsImage, writable: true))
        {
            Serve.Check(Programs.Run("qemu-img", "convert", "-O", "raw", source, theirs.Uri));
        }
        Assert.Equal("Images are identical.\n", Programs.Run("qemu-img", "compare", "-f", "raw", "-F", "raw", mineImage, theirsImage).Stdout);

        using var server = Start(kind, dir, mineImage, writable: true);
        string uri = server.Uri;
        SameAsQemuImg("convert", "-n", "-O", "raw", large, uri);
        SameAsQemuImg("convert", "-O", "raw", large, uri);
        SameAsQemuImg("create", "-f", "raw", uri, "8M");
        SameAsQemuImg("create", "-f", "raw", "-o", "preallocation=full", uri, "1M");
        SameAsQemuImg("resize", "-f", "raw", uri, "8M");
        SameAsQemuImg("create", "-f", "raw", uri, "4M");
        SameAsQemuIo("-f", "raw", "-c", "read -P 0 0 512", "-c", "write -P 0x42 512 64k", "-c", "write -z 1M 64k", "-c", "discard 2M 64k", "-c", "flush", uri);
        SameAsQemuIo("-f", "raw", "-c", "read -P 0x42 512 64k", "-c", "read -P 0 1M 64k", uri);
        // qcow2 written onto the export through NBD: QEMU's check finds it clean.
        var c = Programs.Run(Programs.Vdisk, "create", "-f", "qcow2", uri, "2M");
        Assert.True(c.ExitCode == 0, c.ToString());
        r2(Programs.Run("qemu-img", "check", uri));
        r2(Programs.Run(Programs.Vdisk, "convert", "-n", "-O", "qcow2", source, uri));
        Assert.Equal("Images are identical.\n", Programs.Run("qemu-img", "compare", "-F", "raw", uri, source).Stdout);

        static void r2(RunResult r) => Assert.True(r.ExitCode == 0, r.ToString());
    }

    [Fact]
    public void BadInput_GivesQemusOneLine()
    {
        using var dir = new TempDir();
        var image = Serve.PatternedRaw(dir);
        using var server = Start("qemu-nbd", dir, image, writable: false);
        string socket = server.Socket!;
        int closedPort = FreePort();
        string[] names =
        [
            $"nbd+unix:///nosuch?socket={socket}",
            $"nbd+unix:///disk?socket={dir.File("gone.sock")}",
            $"nbd:unix:{dir.File("gone.sock")}:exportname=disk",
            $"nbd://127.0.0.1:{closedPort}/disk",
            $"nbd:127.0.0.1:{closedPort}",
            "nbd://nonexistent.invalid:10809/x",
            "nbd+unix:///disk",
            "nbd://",
            "nbd://a:99999/x",
            "nbd://a:b/x",
            $"nbd+unix://host/disk?socket={socket}",
            $"nbd+unix:///disk?socket={socket}&x=y",
            "nbd://127.0.0.1/a%2",
            "nbd:",
            "nbd:127.0.0.1",
            "nbd:exportname=x",
            $"nbd:unix:{socket}",
            "nbdx://a",
            "foo:bar.img",
        ];
        foreach (var name in names)
        {
            SameAsQemuImg("info", name);
            Assert.DoesNotContain("   at ", Programs.Run(Programs.Vdisk, "info", name).Stderr);
        }
        SameAsQemuIo("-r", "-f", "raw", "-c", "read 0 512", $"nbd+unix:///nosuch?socket={socket}");
        SameAsQemuIo("-f", "raw", "-c", "write 0 512", server.Uri);
        string[] options =
        [
            "driver=nbd",
            "driver=nbd,server.type=foo",
            "driver=nbd,server.type=unix",
            "driver=nbd,server.type=inet,server.host=localhost",
            $"driver=nbd,path={socket},export=disk,server.type=unix",
            $"driver=nbd,host=localhost,path={socket}",
            $"driver=nbd,path={socket},port=1",
            $"driver=nbd,server.type=unix,server.path={socket},export=disk,bogus=1",
            $"driver=nbd,server.type=unix,server.path={socket},export=disk,server.bogus=1",
            $"driver=nbd,server.type=unix,server.path={socket},export=disk,reconnect-delay=x",
            $"driver=nbd,server.type=unix,server.path={socket},export=disk,tls-creds=x",
        ];
        foreach (var o in options) SameAsQemuImg("info", "--image-opts", o);
    }

    [Fact]
    public void ServerWithoutStructuredReplies_ReadsAndMapsLikeQemu()
    {
        using var dir = new TempDir();
        using var server = new ScriptedNbdServer(dir.File("s.sock"), NbdMisbehaviour.NoStructuredReplies);
        SameAsQemuImg("info", server.Uri);
        SameAsQemuImg("map", "--output=json", "-f", "raw", server.Uri);
        SameAsQemuIo("-f", "raw", "-c", "read -P 0x5a 0 64k", "-c", "write -P 1 0 4k", server.Uri);
        var r = Programs.Run(Programs.Vdisk, "convert", "-f", "raw", "-O", "raw", server.Uri, dir.File("out.raw"));
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Equal(new byte[ScriptedNbdServer.Size].Select(_ => ScriptedNbdServer.Fill), File.ReadAllBytes(dir.File("out.raw")));
    }

    [Theory]
    [InlineData(NbdMisbehaviour.BadReplyMagic)]
    [InlineData(NbdMisbehaviour.ChunkOutsideRequest)]
    [InlineData(NbdMisbehaviour.ClosesDuringGreeting)]
    public void MalformedServer_FailsWithQemusLine(NbdMisbehaviour mode)
    {
        using var dir = new TempDir();
        using var server = new ScriptedNbdServer(dir.File("s.sock"), mode);
        SameAsQemuIo("-f", "raw", "-c", "read 0 4k", "-c", "read 4k 4k", server.Uri);
        SameAsQemuImg("convert", "-f", "raw", "-O", "raw", server.Uri, dir.File("out.raw"));
        var r = Programs.Run(Programs.Vdisk, "convert", "-f", "raw", "-O", "raw", server.Uri, dir.File("out2.raw"));
        Assert.NotEqual(0, r.ExitCode);
        Assert.DoesNotContain("   at ", r.Stderr);
    }

    [Fact]
    public void NbdNode_TakesNoLocks_TheServerHoldsThem()
    {
        using var dir = new TempDir();
        var image = Serve.PatternedRaw(dir);
        using var server = Start("qemu-nbd", dir, image, writable: true);
        string inode = InodeKey(image);
        // While it starts, qemu-nbd holds each lock byte on two descriptors for a moment (seen once
        // in CI: every entry twice before, once after): its holdings are those of one descriptor.
        List<string> before = [];
        Poll.Until(() => (before = LocksOn(inode)).Count > 0 && before.Distinct().Count() == before.Count,
            () => $"qemu-nbd's lock entries never held each byte once: {string.Join(", ", before)}", TimeSpan.FromSeconds(10));
        using var holder = ChildProcess.Start(Programs.Vdisk, ["io", "-f", "raw", "-c", "write -P 0x11 0 4k", "-c", "sleep 600000", server.Uri]);
        holder.WaitForStdout("wrote 4096/4096 bytes at offset 0", TimeSpan.FromSeconds(60));
        Assert.Equal(before, LocksOn(inode));
        // Not a descriptor of the image in the vdisk process: nothing to lock with.
        var targets = Directory.GetFiles($"/proc/{holder.Pid}/fd").Select(f => new FileInfo(f).LinkTarget).ToList();
        Assert.DoesNotContain(image, targets);
    }

    private static string InodeKey(string path)
    {
        var r = Programs.Run("stat", "-c", "%D %i", path);
        var parts = r.Stdout.Trim().Split(' ');
        long dev = Convert.ToInt64(parts[0], 16);
        return $"{dev >> 8:x2}:{dev & 0xff:x2}:{parts[1]}";
    }

    private static List<string> LocksOn(string inodeKey) =>
        File.ReadAllLines("/proc/locks").Where(l => l.Contains(" " + inodeKey + " ", StringComparison.Ordinal))
            .Select(l => l[(l.IndexOf(':') + 1)..].Trim()).Order(StringComparer.Ordinal).ToList();
}
