using System.Net;
using System.Net.Sockets;
using Vdisk.Interop.Support;
using Xunit;

namespace Vdisk.Interop;

/// <summary>
/// vdisk started as <c>qemu-nbd</c> (a symlink of that name), side by side with the real
/// qemu-nbd 7.2: the same lock bytes, the same outcomes for other programs opening the image,
/// the same messages and exit codes for bad command lines, and a server that serves.
/// </summary>
public sealed class QemuNbdTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private static string VdiskNbd => Programs.VdiskAs("qemu-nbd");

    private string Image(string format)
    {
        string img = _dir.File("disk." + format);
        Assert.Equal(0, Programs.Run("qemu-img", "create", "-q", "-f", format, img, "1M").ExitCode);
        // An internal snapshot for -l to export.
        if (format == "qcow2") Assert.Equal(0, Programs.Run("qemu-img", "snapshot", "-c", "sn1", img).ExitCode);
        return img;
    }

    public static TheoryData<string, string[]> ServingModes => new()
    {
        { "raw", ["-f", "raw"] },
        { "raw", ["-r", "-f", "raw"] },
        { "raw", ["-f", "raw", "-e", "3", "-t"] },
        { "raw", ["-f", "raw", "--shared=0", "--discard=unmap", "--detect-zeroes=unmap"] },
        { "raw", [] },
        { "qcow2", ["-f", "qcow2"] },
        { "qcow2", ["-r", "-f", "qcow2"] },
        { "qcow2", ["--image-opts"] },
        { "qcow2", ["-s", "-f", "qcow2"] },
        { "qcow2", ["-l", "sn1", "-f", "qcow2"] },
    };

    /// <summary>A server holding <paramref name="img"/>: ready once it holds lock bytes (every mode here holds some).</summary>
    private static Holder Serving(string img, string program, string[] args) => Holder.Start(img, program, args, bytes => bytes.Count > 0);

    private string[] Arguments(string[] options, string img, string socket) =>
        [.. options, "-k", socket, options.Contains("--image-opts") ? $"driver=qcow2,file.driver=file,file.filename={img}" : img];

    [Theory]
    [MemberData(nameof(ServingModes))]
    public void LockBytes_EqualQemuNbds(string format, string[] options)
    {
        string img = Image(format);
        string qemuBytes, vdiskBytes;
        using (var q = Serving(img, "qemu-nbd", Arguments(options, img, _dir.File("q.sock"))))
            qemuBytes = LockBytesHeld.Describe(LockBytesHeld.Read(q.Pid, img));
        using (var v = Serving(img, VdiskNbd, Arguments(options, img, _dir.File("v.sock"))))
            vdiskBytes = LockBytesHeld.Describe(LockBytesHeld.Read(v.Pid, img));
        Assert.NotEqual("", qemuBytes);
        Assert.Equal(qemuBytes, vdiskBytes);
    }

    private static readonly (string Name, Func<string, string, string[]> Args, string Program)[] s_openers =
    [
        ("qemu-io write", (img, fmt) => ["-f", fmt, "-c", "write 0 4k", img], "qemu-io"),
        ("qemu-io -r read", (img, fmt) => ["-r", "-f", fmt, "-c", "read 0 4k", img], "qemu-io"),
        ("qemu-io -r -U read", (img, fmt) => ["-r", "-U", "-f", fmt, "-c", "read 0 4k", img], "qemu-io"),
        ("qemu-img info", (img, fmt) => ["info", "-f", fmt, img], "qemu-img"),
        ("qemu-img check", (img, fmt) => ["check", "-f", fmt, img], "qemu-img"),
        ("qemu-img resize", (img, fmt) => ["resize", "-f", fmt, img, "2M"], "qemu-img"),
    ];

    [Theory]
    [MemberData(nameof(ServingModes))]
    public void Openers_GetTheOutcomeTheyGetAgainstQemuNbd(string format, string[] options)
    {
        string img = Image(format);
        string fmt = format;
        var mismatches = new List<string>();
        // resize changes the image: each holder gets a fresh copy of the same image.
        string pristine = _dir.File("pristine");
        File.Copy(img, pristine);
        foreach (var (name, args, program) in s_openers)
        {
            File.Copy(pristine, img, overwrite: true);
            RunResult q, v;
            using (Serving(img, "qemu-nbd", Arguments(options, img, _dir.File("q.sock")))) q = Programs.Run(program, args(img, fmt));
            File.Copy(pristine, img, overwrite: true);
            using (Serving(img, VdiskNbd, Arguments(options, img, _dir.File("v.sock")))) v = Programs.Run(program, args(img, fmt));
            if ((q.ExitCode, q.Stderr) != (v.ExitCode, v.Stderr))
                mismatches.Add($"{name}: qemu-nbd {q.ExitCode} '{q.Stderr.Trim()}', vdisk {v.ExitCode} '{v.Stderr.Trim()}'");
        }
        Assert.Empty(mismatches);
    }

    public static TheoryData<string[]> BadCommandLines => new()
    {
        { [] },
        { ["--frob"] },
        { ["-Z", "IMG"] },
        { ["-U", "-f", "raw", "IMG"] },
        { ["-e"] },
        { ["-x"] },
        { ["-e", "-1", "IMG"] },
        { ["-e", "x", "IMG"] },
        { ["-k", "relative.sock", "IMG"] },
        { ["IMG", "IMG"] },
        { ["--cache=bogus", "IMG"] },
        { ["-n", "--cache=none", "IMG"] },
        { ["--aio=x", "IMG"] },
        { ["--discard=x", "IMG"] },
        { ["--discard=unmap", "--discard=unmap", "IMG"] },
        { ["--detect-zeroes=x", "IMG"] },
        { ["--detect-zeroes=unmap", "--discard=unmap", "IMG"] },
        { ["-o", "x", "IMG"] },
        { ["--image-opts", "-f", "raw", "-k", "SOCK", "IMG"] },
        { ["-f", "qcow2", "-k", "SOCK", "IMG"] },
        { ["-f", "raw", "-k", "SOCK", "MISSING"] },
        { ["-l", "snapshot.bogus=1", "-k", "SOCK", "IMG"] },
        { ["-l", "snapshot.x", "-k", "SOCK", "IMG"] },
        { ["-l", "sn1", "-f", "raw", "-k", "SOCK", "IMG"] },
        { ["--persistent=1", "IMG"] },
        { ["-L", "IMG"] },
        { ["-L", "-x", "disk"] },
        { ["-L", "-f", "raw"] },
        { ["-L", "-A", "-k", "SOCK"] },
        { ["-L", "--cache=none"] },
        { ["-L", "-c", "/dev/nbd0"] },
        { ["-L", "--fork"] },
        { ["-L", "-k", "SOCK"] },
        { ["--list", "-b", "127.0.0.1", "-p", "1"] },
    };

    [Theory]
    [MemberData(nameof(BadCommandLines))]
    public void BadCommandLine_GivesQemuNbdsMessageAndExitCode(string[] template)
    {
        string img = _dir.RawImage();
        string[] Args(string sock) => template.Select(a => a switch
        {
            "IMG" => img,
            "SOCK" => sock,
            "MISSING" => _dir.File("missing.raw"),
            _ => a,
        }).ToArray();
        var q = Programs.Run("qemu-nbd", Args(_dir.File("q.sock")), null, TimeSpan.FromSeconds(30));
        var v = Programs.Run(VdiskNbd, Args(_dir.File("q.sock")), null, TimeSpan.FromSeconds(30));
        Assert.NotEqual(0, q.ExitCode);
        // Both name the program as started (getopt, and the "Try ... --help" hint).
        Assert.Equal((q.ExitCode, q.Stdout, q.Stderr), (v.ExitCode, v.Stdout, v.Stderr.Replace(VdiskNbd, "qemu-nbd", StringComparison.Ordinal)));
    }

    /// <summary>The servers <c>-L</c> is tried against: each real one and its vdisk twin, several exports, descriptions, meta contexts.</summary>
    public static TheoryData<string> ListedServers => new() { "qemu-nbd", "vdisk-as-qemu-nbd", "qsd", "vdisk-serve", "no-structured", "oldstyle", "not-fixed" };

    /// <summary>
    /// <c>qemu-nbd -L</c> (and <c>--list</c> over TCP) prints what qemu-nbd prints for each export:
    /// name, description, size, flags, block sizes, meta contexts; or its error for a server
    /// that cannot list.
    /// </summary>
    [Theory]
    [MemberData(nameof(ListedServers))]
    public void List_PrintsWhatQemuNbdPrints(string kind)
    {
        string img = Image("qcow2");
        string socket = _dir.File("s.sock");
        IDisposable server = kind switch
        {
            "qemu-nbd" or "vdisk-as-qemu-nbd" => Daemon.Start(kind == "qemu-nbd" ? "qemu-nbd" : VdiskNbd,
                ["-t", "-r", "-A", "-f", "qcow2", "-x", "disk", "-D", "a listed disk", "-k", socket, img], socket),
            "qsd" => Daemon.Qsd(ListedExports(img, socket), socket),
            "vdisk-serve" => Daemon.Vdisk(ListedExports(img, socket), socket),
            "no-structured" => new ScriptedNbdServer(socket, NbdMisbehaviour.NoStructuredReplies),
            "oldstyle" => new ScriptedNbdServer(socket, NbdMisbehaviour.Oldstyle),
            "not-fixed" => new ScriptedNbdServer(socket, NbdMisbehaviour.NotFixedNewstyle),
            _ => throw new ArgumentException(kind),
        };
        RunResult mine;
        using (server)
        {
            foreach (var args in new[] { new[] { "-L", "-k", socket }, ["--list", "--socket", socket] })
            {
                var q = Programs.Run("qemu-nbd", args);
                mine = Programs.Run(VdiskNbd, args);
                Assert.Equal((q.ExitCode, q.Stdout, q.Stderr), (mine.ExitCode, mine.Stdout, mine.Stderr));
            }
            mine = Programs.Run(VdiskNbd, "-L", "-k", socket);
        }
        var expected = kind switch
        {
            "qemu-nbd" or "vdisk-as-qemu-nbd" => "  description: a listed disk\n",
            "qsd" or "vdisk-serve" => "exports available: 2\n",
            "oldstyle" => "exports available: 1\n export: ''\n  size:  1048576\n",
            "no-structured" => "exports available: 0\n",
            _ => "",
        };
        Assert.Contains(expected, mine.Stdout);
        if (kind == "not-fixed") Assert.Equal("qemu-nbd: Server does not support export lists\n", mine.Stderr.Replace(VdiskNbd, "qemu-nbd", StringComparison.Ordinal));
    }

    /// <summary>A storage daemon command line with two exports of one image: a read-only one with a description and a writable one offering qemu:allocation-depth.</summary>
    private static string[] ListedExports(string img, string socket) =>
    [
        "--blockdev", $"driver=file,node-name=file0,filename={img}",
        "--blockdev", "driver=qcow2,node-name=fmt0,file=file0",
        "--nbd-server", $"addr.type=unix,addr.path={socket}",
        "--export", "type=nbd,id=e0,node-name=fmt0,name=first,description=the first export",
        "--export", "type=nbd,id=e1,node-name=fmt0,name=second,writable=on,allocation-depth=on",
    ];

    [Fact]
    public void ConnectIsRefusedWithAClearMessage()
    {
        string img = _dir.RawImage();
        var v = Programs.Run(VdiskNbd, "-c", "/dev/nbd0", img);
        Assert.Equal(1, v.ExitCode);
        Assert.StartsWith("qemu-nbd: -c/--connect and -d/--disconnect (the kernel NBD client) are not supported by vdisk", v.Stderr);
        Assert.Equal(1, v.Stderr.Count(c => c == '\n'));
    }

    private static void WaitForSocket(ChildProcess server, string socket)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (!File.Exists(socket))
        {
            if (server.HasExited) throw new InvalidOperationException($"server exited: {server.Result()}");
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"no socket {socket}");
            server.WaitForExit(TimeSpan.FromMilliseconds(20));
        }
    }

    [Fact]
    public void ServesOverUnixSocket_AndExitsAfterTheClientDisconnects()
    {
        string img = Image("qcow2");
        string socket = _dir.File("v.sock");
        using var server = ChildProcess.Start(VdiskNbd, ["-f", "qcow2", "-x", "disk", "-D", "a test disk", "-k", socket, img]);
        WaitForSocket(server, socket);
        var info = Programs.Run("nbdinfo", $"nbd+unix:///disk?socket={socket}");
        Assert.Equal(0, info.ExitCode);
        Assert.Contains("description: a test disk", info.Stdout);
        // nbdinfo was a client: without -t the server is gone once it disconnected.
        Assert.True(server.WaitForExit(TimeSpan.FromSeconds(30)), "qemu-nbd without -t kept running after its client left");
        var r = server.Result();
        Assert.Equal((0, ""), (r.ExitCode, r.Stderr));
        Assert.False(File.Exists(socket));
    }

    [Fact]
    public void Persistent_ServesClientAfterClient_OverTcp()
    {
        string img = _dir.RawImage();
        int port = FreePort();
        using var server = ChildProcess.Start(VdiskNbd, ["-f", "raw", "-t", "-b", "127.0.0.1", "-p", port.ToString(System.Globalization.CultureInfo.InvariantCulture), img]);
        string uri = $"nbd://127.0.0.1:{port}";
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        RunResult w;
        // Poll until the server listens (connection refused until then).
        while ((w = Programs.Run("qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 64k", uri)).ExitCode != 0)
        {
            Assert.False(server.HasExited, "server exited");
            Assert.True(DateTime.UtcNow < deadline, w.ToString());
            server.WaitForExit(TimeSpan.FromMilliseconds(50));
        }
        var read = Programs.Run("qemu-io", "-f", "raw", "-r", "-c", "read -P 0x5a 0 64k", uri);
        Assert.Equal(0, read.ExitCode);
        Assert.DoesNotContain("Pattern verification failed", read.Stdout);
        Assert.False(server.HasExited);
        server.Kill();
        Assert.Equal(0, Programs.Run("qemu-io", "-f", "raw", "-r", "-c", "read -P 0x5a 0 64k", img).ExitCode);
    }

    [Fact]
    public void ReadOnly_RefusesWritesAsQemuNbdDoes()
    {
        string img = _dir.RawImage();
        string qs = _dir.File("q.sock"), vs = _dir.File("v.sock");
        using var q = Serving(img, "qemu-nbd", ["-r", "-t", "-f", "raw", "-k", qs, img]);
        using var v = Serving(img, VdiskNbd, ["-r", "-t", "-f", "raw", "-k", vs, img]);
        WaitForSocket(v.Process, vs);
        var qw = Programs.Run("qemu-io", "-f", "raw", "-c", "write 0 4k", $"nbd+unix:///?socket={qs}");
        var vw = Programs.Run("qemu-io", "-f", "raw", "-c", "write 0 4k", $"nbd+unix:///?socket={vs}");
        Assert.NotEqual(0, qw.ExitCode);
        Assert.Equal((qw.ExitCode, qw.Stdout, qw.Stderr), (vw.ExitCode, vw.Stdout, vw.Stderr.Replace(vs, qs, StringComparison.Ordinal)));
    }

    /// <summary>
    /// -l exports an internal snapshot read-only; -s exports a temporary overlay that takes the
    /// writes. What clients read and write, and the image afterwards, as with qemu-nbd.
    /// </summary>
    [Theory]
    [InlineData(new[] { "-l", "sn1" }, "read -P 1 0 64k | read -P 0 64k 64k | write -P 9 0 4k")]
    [InlineData(new[] { "-l", "snapshot.name=sn1" }, "read -P 1 0 64k | read -P 0 64k 64k")]
    // No such snapshot: the server ends with QEMU's message (no client: the socket exists briefly).
    [InlineData(new[] { "-l", "snapshot.id=1,snapshot.name=nope" }, "")]
    [InlineData(new[] { "-s" }, "read -P 2 0 128k | write -P 9 0 4k | read -P 9 0 4k")]
    public void SnapshotExports_ServeWhatQemuNbdServes(string[] options, string script)
    {
        string[] commands = script == "" ? [] : [.. script.Split(" | ").SelectMany(c => new[] { "-c", c })];
        (RunResult Server, RunResult Client) Run(string program, string name)
        {
            string img = _dir.File(name + ".qcow2"), socket = _dir.File(name + ".sock");
            Assert.Equal(0, Programs.Run("qemu-img", "create", "-q", "-f", "qcow2", img, "1M").ExitCode);
            Assert.Equal(0, Programs.Run("qemu-io", "-f", "qcow2", "-c", "write -P 1 0 64k", img).ExitCode);
            Assert.Equal(0, Programs.Run("qemu-img", "snapshot", "-c", "sn1", img).ExitCode);
            Assert.Equal(0, Programs.Run("qemu-io", "-f", "qcow2", "-c", "write -P 2 0 128k", img).ExitCode);
            using var server = ChildProcess.Start(program, [.. options, "-f", "qcow2", "-k", socket, img]);
            var client = new RunResult(0, "", "");
            if (commands.Length > 0)
            {
                WaitForSocket(server, socket);
                client = Programs.Run("qemu-io", ["-f", "raw", $"nbd+unix:///?socket={socket}", .. commands]);
            }
            // Without -t the server ends when its client leaves (or it refused to start).
            Assert.True(server.WaitForExit(TimeSpan.FromSeconds(30)), "the server kept running");
            // The image itself never changes: -l is read-only, -s writes to the overlay.
            Assert.Equal(0, Programs.Run("qemu-io", "-r", "-f", "qcow2", "-c", "read -P 2 0 128k", img).ExitCode);
            return (server.Result(), client);
        }
        var (qs, qc) = Run("qemu-nbd", "q");
        var (vs, vc) = Run(VdiskNbd, "v");
        Assert.Equal((qs.ExitCode, qs.Stderr), (vs.ExitCode, vs.Stderr.Replace(VdiskNbd, "qemu-nbd", StringComparison.Ordinal)));
        Assert.Equal((qc.ExitCode, ToolOutputTests.Normalize(qc.Stdout), qc.Stderr.Replace(_dir.File("q.sock"), "SOCK")),
            (vc.ExitCode, ToolOutputTests.Normalize(vc.Stdout), vc.Stderr.Replace(_dir.File("v.sock"), "SOCK")));
    }

    /// <summary>
    /// -A offers qemu:allocation-depth: which layer of a backing chain holds each extent (0 for
    /// none; past the end of a shorter backing file, that file). What nbdinfo lists and maps, with
    /// base:allocation beside it and without -A, as with qemu-nbd.
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void AllocationDepth_MapsAsQemuNbds(bool allocationDepth)
    {
        string top = Chain();
        string[] Inspect(string program, string name)
        {
            string socket = _dir.File(name + ".sock");
            using var server = ChildProcess.Start(program, [.. allocationDepth ? new[] { "-A" } : [], "-t", "-r", "-f", "qcow2", "-k", socket, top]);
            WaitForSocket(server, socket);
            string uri = $"nbd+unix:///?socket={socket}";
            var runs = new[]
            {
                Programs.Run("nbdinfo", "--map=qemu:allocation-depth", uri),
                Programs.Run("nbdinfo", "--map", uri),
                Programs.Run("nbdinfo", "--map=qemu:allocation-depth", "--totals", uri),
                Programs.Run("nbdinfo", "--json", uri),
            };
            if (allocationDepth)
            {
                // The NBD client side: qemu-img map reading the context as x-dirty-bitmap (a depth of
                // 0 is a hole that is not zero: neither present nor zero, and no offset).
                string[] map = ["map", "--output=json", "--image-opts", $"driver=nbd,server.type=unix,server.path={socket},x-dirty-bitmap=qemu:allocation-depth"];
                var qemuMap = Programs.Run("qemu-img", map);
                Assert.True(qemuMap.ExitCode == 0, qemuMap.ToString());
                Assert.Equal(qemuMap.Stdout, Programs.Run(Programs.Vdisk, map).Stdout);
            }
            server.Kill();
            return runs.Select(r => $"exit {r.ExitCode}\n{r.Stdout}{r.Stderr}".Replace(socket, "SOCK", StringComparison.Ordinal)).ToArray();
        }
        var theirs = Inspect("qemu-nbd", "q");
        var mine = Inspect(VdiskNbd, "v");
        Assert.Equal(theirs, mine);
        Assert.Contains(allocationDepth ? "backing depth 3" : "exit 1", theirs[0]);
    }

    /// <summary>A 4 MiB qcow2 over a 2 MiB qcow2 over a 1 MiB one, with data and zeroes in each layer.</summary>
    private string Chain()
    {
        string bottom = _dir.File("bottom.qcow2"), middle = _dir.File("middle.qcow2"), top = _dir.File("top.qcow2");
        void Ok(params string[] args) => Assert.Equal(0, Programs.Run(args[0], args[1..]).ExitCode);
        Ok("qemu-img", "create", "-q", "-f", "qcow2", bottom, "1M");
        Ok("qemu-io", "-f", "qcow2", "-c", "write 0 64k", bottom);
        Ok("qemu-img", "create", "-q", "-f", "qcow2", "-b", bottom, "-F", "qcow2", middle, "2M");
        Ok("qemu-io", "-f", "qcow2", "-c", "write 128k 64k", "-c", "write -z 1M 64k", middle);
        Ok("qemu-img", "create", "-q", "-f", "qcow2", "-b", middle, "-F", "qcow2", top, "4M");
        Ok("qemu-io", "-f", "qcow2", "-c", "write 32k 64k", "-c", "write 3M 4k", "-c", "write -z 512k 64k", top);
        return top;
    }

    [Fact]
    public void Fork_ReturnsOnceServing_WithPidFile()
    {
        string img = _dir.RawImage();
        string socket = _dir.File("v.sock"), pidFile = _dir.File("nbd.pid");
        var r = Programs.Run(VdiskNbd, ["--fork", "--pid-file", pidFile, "-f", "raw", "-k", socket, img], null, TimeSpan.FromSeconds(60));
        Assert.Equal((0, ""), (r.ExitCode, r.Stderr));
        int pid = int.Parse(File.ReadAllText(pidFile).Trim(), System.Globalization.CultureInfo.InvariantCulture);
        try
        {
            Assert.True(File.Exists(socket));
            Assert.Equal("100,101,203", LockBytesHeld.Describe(LockBytesHeld.Read(pid, img)));
            Assert.Equal(0, Programs.Run("qemu-io", "-f", "raw", "-c", "write -P 7 0 4k", $"nbd+unix:///?socket={socket}").ExitCode);
        }
        finally
        {
            try
            {
                System.Diagnostics.Process.GetProcessById(pid).Kill();
            }
            catch (ArgumentException) { }
        }
    }

    private static int FreePort()
    {
        using var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }
}
