using Vdisk.Interop.Support;
using Xunit;

namespace Vdisk.Interop;

/// <summary>
/// Bad command lines: vdisk serve prints qemu-storage-daemon's message with its own program
/// name, exits 1, and leaves no socket, lock or pid file behind.
/// </summary>
public class ServeCommandLineTests
{
    /// <summary>Runs both daemons with the same arguments ({dir} and {img} are substituted).</summary>
    private static (RunResult Qsd, RunResult Vdisk) Both(TempDir dir, string image, string[] args)
    {
        var resolved = args.Select(a => a.Replace("{dir}", dir.Path).Replace("{img}", image)).ToArray();
        var qsd = Programs.Run("qemu-storage-daemon", resolved, null, TimeSpan.FromSeconds(30));
        var vdisk = Programs.Run(Programs.Vdisk, ["serve", .. resolved], null, TimeSpan.FromSeconds(30));
        return (qsd, vdisk);
    }

    public static TheoryData<string[]> SameAsQsd => new()
    {
        new[] { "--blockdev", "driver=file,node-name=f0,filename={img},read-only=maybe" },
        new[] { "--blockdev", "driver=file,filename={img}" },
        new[] { "--blockdev", "driver=file,node-name=f0" },
        new[] { "--blockdev", "file,node-name=f0,filename={img},bogus=1" },
        new[] { "--blockdev", "raw,node-name=r0,file.driver=file,file.filename={img},file.bogus=1" },
        new[] { "--blockdev", "driver=raw,node-name=r0,file.driver=file,file.filename={img},offset=abc" },
        new[] { "--blockdev", "driver=file,node-name=f0,filename={img},locking=maybe" },
        new[] { "--blockdev", "driver=file,node-name=f0,filename={img},cache=x" },
        new[] { "--blockdev", "driver=raw,node-name=r0,file=5,file.x=1" },
        new[] { "--blockdev", "driver=file,node-name=f0,filename={dir}/nope" },
        new[] { "--blockdev", "driver=raw,node-name=r0,file=nope" },
        new[] { "--blockdev", "driver=file,node-name=9bad,filename={img}" },
        new[] { "--blockdev", "driver=file,node-name=f0,filename={img}", "--blockdev", "driver=file,node-name=f0,filename={img}" },
        new[] { "--blockdev", "{\"driver\":\"file\"" },
        new[] { "--blockdev", "{\"driver\":\"file\",\"node-name\":\"f0\",\"filename\":\"{img}\",\"bogus\":1}" },
        new[] { "--blockdev", "" },
        new[] { "--blockdev", "driver=file,node-name=f0,filename={img},discard=on" },
        new[] { "--blockdev", "driver=file,node-name=f0,filename={img},detect-zeroes=bogus" },
        new[] { "--blockdev", "driver=file,node-name=f0,filename={img},detect-zeroes=unmap" },
        new[] { "--blockdev", "driver=raw,node-name=r0,file.driver=file,file.filename={img},detect-zeroes=unmap,file.discard=unmap" },
        new[] { "--nbd-server", "addr.type=unix" },
        new[] { "--nbd-server", "addr.type=unix,addr.path={dir}/x.sock,bogus=1" },
        new[] { "--nbd-server", "addr.type=foo" },
        new[] { "--nbd-server", "addr.type=unix,addr.path={dir}/x.sock,max-connections=x" },
        new[] { "--nbd-server", "addr.type=unix,addr.path={dir}/nonexist/x.sock" },
        new[] { "--blockdev", "driver=file,node-name=f0,filename={img}", "--export", "type=nbd,id=e0,node-name=f0" },
        new[] { "--blockdev", "driver=file,node-name=f0,filename={img}", "--nbd-server", "addr.type=unix,addr.path={dir}/x.sock", "--export", "type=nbd,id=e0" },
        new[] { "--blockdev", "driver=file,node-name=f0,filename={img}", "--nbd-server", "addr.type=unix,addr.path={dir}/x.sock", "--export", "id=e0,node-name=f0" },
        new[] { "--blockdev", "driver=file,node-name=f0,filename={img}", "--nbd-server", "addr.type=unix,addr.path={dir}/x.sock", "--export", "nbd,id=e0,node-name=f0,writable=maybe" },
        new[] { "--blockdev", "driver=file,node-name=f0,filename={img}", "--nbd-server", "addr.type=unix,addr.path={dir}/x.sock", "--export", "nbd,id=e0,node-name=f1" },
        new[] { "--blockdev", "driver=file,node-name=f0,filename={img}", "--nbd-server", "addr.type=unix,addr.path={dir}/x.sock", "--export", "nbd,id=9bad,node-name=f0" },
        new[] { "--blockdev", "driver=file,node-name=f0,filename={img}", "--nbd-server", "addr.type=unix,addr.path={dir}/x.sock", "--export", "nbd,id=e0,node-name=f0", "--export", "nbd,id=e0,node-name=f0" },
        new[] { "--chardev", "socket,path={dir}/q.sock,server=on,wait=off" },
        new[] { "--chardev", "socket,id=m0,path={dir}/nonexist/q.sock,server=on,wait=off" },
        new[] { "--chardev", "socket,id=m0,path={dir}/q.sock,server=on,wait=off,bogus=1" },
        new[] { "--monitor", "chardev=m1" },
        new[] { "--monitor", "m1" },
        new[] { "--chardev", "socket,id=m0,path={dir}/q.sock,server=on,wait=off", "--pidfile", "{dir}/nonexist/p.pid" },
        new[] { "--pidfile" },
        new[] { "--bogus" },
        new[] { "-x" },
        new[] { "positional" },
    };

    [Theory]
    [MemberData(nameof(SameAsQsd))]
    public void BadArguments_GiveQsdsMessage(string[] args)
    {
        using var dir = new TempDir();
        var image = dir.RawImage();
        var (qsd, vdisk) = Both(dir, image, args);
        Assert.Equal(1, qsd.ExitCode);
        Assert.Equal((1, qsd.Stderr.Replace("qemu-storage-daemon:", "vdisk:", StringComparison.Ordinal), ""), (vdisk.ExitCode, vdisk.Stderr, vdisk.Stdout));
        Assert.Equal([image], Directory.EnumerateFiles(dir.Path));
    }

    public static TheoryData<string[]> SameAsQsdOnQcow2 => new()
    {
        new[] { "--blockdev", "driver=qcow2,node-name=q,file.driver=file,file.filename={img},backing=nope" },
        new[] { "--blockdev", "driver=qcow2,node-name=q,file.driver=file,file.filename={img},lazy-refcounts=maybe" },
        new[] { "--blockdev", "driver=qcow2,node-name=q,file.driver=file,file.filename={img},bogus=1" },
        new[] { "--blockdev", "driver=qcow2,node-name=q,file.driver=file,file.filename={img}", "--blockdev", "driver=qcow2,node-name=q2,file.driver=file,file.filename={img}" },
    };

    [Theory]
    [MemberData(nameof(SameAsQsdOnQcow2))]
    public void BadQcow2Arguments_GiveQsdsMessage(string[] args)
    {
        using var dir = new TempDir();
        var image = Serve.PatternedQcow2(dir);
        var (qsd, vdisk) = Both(dir, image, args);
        Assert.Equal(1, qsd.ExitCode);
        Assert.Equal((1, qsd.Stderr.Replace("qemu-storage-daemon:", "vdisk:", StringComparison.Ordinal), ""), (vdisk.ExitCode, vdisk.Stderr, vdisk.Stdout));
    }

    [Theory]
    [InlineData(new[] { "--chardev", "file,id=m0,path={dir}/q" }, "vdisk: --chardev file,id=m0,path={dir}/q: chardev backend 'file' is not supported by vdisk serve (only 'socket')\n")]
    [InlineData(new[] { "--chardev", "socket,id=m0,path={dir}/q.sock,server=on,wait=on" }, "vdisk: --chardev socket,id=m0,path={dir}/q.sock,server=on,wait=on: vdisk serve does not wait for a monitor client: the socket chardev needs wait=off\n")]
    [InlineData(new[] { "--nbd-server", "addr.type=unix,addr.path={dir}/x.sock,tls-creds=t0" }, "vdisk: --nbd-server addr.type=unix,addr.path={dir}/x.sock,tls-creds=t0: No TLS credentials with id 't0'\n")]
    public void UnsupportedFeatures_AreRefusedClearly(string[] args, string message)
    {
        using var dir = new TempDir();
        var r = Programs.Run(Programs.Vdisk, ["serve", .. args.Select(a => a.Replace("{dir}", dir.Path))]);
        Assert.Equal((1, message.Replace("{dir}", dir.Path)), (r.ExitCode, r.Stderr));
    }

    private static bool IsAlive(int pid) => Directory.Exists($"/proc/{pid}") && !File.ReadAllText($"/proc/{pid}/stat").Contains(") Z ", StringComparison.Ordinal);

    /// <summary>
    /// --daemonize --pidfile: the command returns once the daemon is ready (its monitor answers
    /// at once), the pid file names the daemon (not the command), locked against a second
    /// daemon, and the daemon removes it as it quits.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Daemonize_ReturnsOnceReady_WithALockedPidFile_LikeQsd(bool vdisk)
    {
        using var dir = new TempDir();
        string pidfile = dir.File("d.pid"), qmp = dir.File("m.sock");
        string program = vdisk ? Programs.Vdisk : "qemu-storage-daemon";
        string[] prefix = vdisk ? ["serve"] : [];
        var started = Programs.Run(program, [.. prefix, "--daemonize", "--pidfile", pidfile, .. Serve.Monitor(qmp)], null, TimeSpan.FromSeconds(60));
        Assert.Equal((0, "", ""), (started.ExitCode, started.Stdout, started.Stderr));
        int pid = int.Parse(File.ReadAllText(pidfile).Trim(), System.Globalization.CultureInfo.InvariantCulture);
        Assert.True(IsAlive(pid));

        // Ready means ready: no waiting for the socket.
        using (var c = QmpClient.Connect(qmp))
        {
            var second = Programs.Run(program, [.. prefix, "--pidfile", pidfile], null, TimeSpan.FromSeconds(60));
            string name = vdisk ? "vdisk" : "qemu-storage-daemon";
            Assert.Equal((1, $"{name}: cannot create PID file: Cannot lock pid file: Resource temporarily unavailable\n"), (second.ExitCode, second.Stderr));
            Assert.Equal($"{pid}\n", File.ReadAllText(pidfile));
            Assert.Equal("{\"return\": {}}", c.Execute("{\"execute\":\"quit\"}"));
        }
        Poll.Until(() => !IsAlive(pid), () => "the daemon did not exit after quit");
        Assert.False(File.Exists(pidfile));
    }

    [Fact]
    public void Daemonize_StartUpError_IsReportedByTheCommand_LikeQsd()
    {
        using var dir = new TempDir();
        string[] args = ["--daemonize", "--pidfile", dir.File("d.pid"), "--blockdev", $"driver=file,node-name=f0,filename={dir.File("nope")}"];
        var qsd = Programs.Run("qemu-storage-daemon", args, null, TimeSpan.FromSeconds(60));
        var vdisk = Programs.Run(Programs.Vdisk, ["serve", .. args], null, TimeSpan.FromSeconds(60));
        Assert.Equal(1, qsd.ExitCode);
        Assert.Equal((1, qsd.Stderr.Replace("qemu-storage-daemon:", "vdisk:", StringComparison.Ordinal)), (vdisk.ExitCode, vdisk.Stderr));
        Assert.Empty(Directory.EnumerateFiles(dir.Path));
    }

    [Fact]
    public void AFailedOption_ReleasesWhatEarlierOptionsTook()
    {
        using var dir = new TempDir();
        var image = dir.RawImage();
        var r = Programs.Run(Programs.Vdisk, "serve", "--blockdev", $"driver=file,node-name=f0,filename={image}", "--blockdev", "driver=raw,node-name=r0,file=f0",
            "--nbd-server", $"addr.type=unix,addr.path={dir.File("n.sock")}", "--export", "nbd,id=e0,node-name=r0,writable=on", "--export", "nbd,id=e1,node-name=nope");
        Assert.Equal(1, r.ExitCode);
        Assert.False(File.Exists(dir.File("n.sock")));
        Assert.Equal("ok", Outcome.Of(Programs.Run("qemu-io", "-f", "raw", image, "-c", "write 0 4k")));
    }

    [Fact]
    public void Help_ListsTheOptions()
    {
        var r = Programs.Run(Programs.Vdisk, "serve", "--help");
        Assert.Equal(0, r.ExitCode);
        foreach (var option in new[] { "--blockdev", "--nbd-server", "--export", "--chardev", "--monitor", "--pidfile", "share-rw" })
            Assert.Contains(option, r.Stdout);
        Assert.Contains("serve", Programs.Run(Programs.Vdisk, "--help").Stdout);
    }
}
