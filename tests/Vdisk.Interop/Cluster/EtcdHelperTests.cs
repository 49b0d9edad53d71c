using Vdisk.Interop.Support;
using Xunit;

namespace Vdisk.Interop.Cluster;

/// <summary>The etcd helper (vdisk-etcd) as users meet it: only a cluster lock starts it, and a missing one is a plain error.</summary>
public class EtcdHelperTests
{
    private static string Image()
    {
        string path = Path.Combine(Path.GetTempPath(), $"vdisk-helper-{Guid.NewGuid():N}.raw");
        File.WriteAllBytes(path, new byte[1 << 20]);
        return path;
    }

    [Fact]
    public void AMissingHelper_IsOneLine_NamingWhereItWasLookedFor()
    {
        string image = Image();
        try
        {
            var env = new Dictionary<string, string>
            {
                ["VDISK_ETCD_ENDPOINTS"] = "http://127.0.0.1:1",
                ["VDISK_ETCD_AGENT"] = "/nonexistent/vdisk-etcd",
            };
            var run = Programs.Run(Programs.Vdisk, ["io", "--image-opts", $"driver=raw,file.driver=file,file.filename={image},file.cluster-lock-id=x", "-c", "read 0 512"], env);
            Assert.Equal(1, run.ExitCode);
            Assert.Equal("", run.Stdout);
            Assert.Equal("vdisk: can't open: cluster locks need vdisk-etcd: /nonexistent/vdisk-etcd: No such file or directory\n", run.Stderr);

            // Without a cluster lock the helper is never looked for.
            var local = Programs.Run(Programs.Vdisk, ["io", "-f", "raw", image, "-c", "read 0 512"], env);
            Assert.Equal(0, local.ExitCode);
            Assert.Equal("", local.Stderr);
        }
        finally
        {
            File.Delete(image);
        }
    }

    [Fact]
    public void TheHelpersStderr_ComesThroughVdisk_BeforeWhatVdiskSaysOfItsEnd()
    {
        string image = Image();
        string helper = Path.Combine(Path.GetTempPath(), $"vdisk-etcd-{Guid.NewGuid():N}");
        File.WriteAllText(helper, "#!/bin/sh\necho 'vdisk-etcd: something broke' >&2\nexit 3\n");
        File.SetUnixFileMode(helper, UnixFileMode.UserRead | UnixFileMode.UserExecute);
        try
        {
            var run = Programs.Run(Programs.Vdisk, ["io", "--image-opts", $"driver=raw,file.driver=file,file.filename={image},file.cluster-lock-id=x", "-c", "read 0 512"],
                new Dictionary<string, string> { ["VDISK_ETCD_ENDPOINTS"] = "http://127.0.0.1:1", ["VDISK_ETCD_AGENT"] = helper });
            Assert.Equal(1, run.ExitCode);
            Assert.Equal("vdisk-etcd: something broke\nvdisk: can't open: etcd unreachable: the etcd helper vdisk-etcd exited with status 3\n", run.Stderr);
        }
        finally
        {
            File.Delete(image);
            File.Delete(helper);
        }
    }

    [Fact]
    public void TheHelperBesideVdisk_ReportsEtcdsOwnError()
    {
        string image = Image();
        try
        {
            var run = Programs.Run(Programs.Vdisk, ["io", "--image-opts", $"driver=raw,file.driver=file,file.filename={image},file.cluster-lock-id=x", "-c", "read 0 512"],
                new Dictionary<string, string> { ["VDISK_ETCD_ENDPOINTS"] = "http://127.0.0.1:1" });
            Assert.Equal(1, run.ExitCode);
            Assert.Equal("vdisk: can't open: etcd unreachable while granting a lease: http://127.0.0.1:1 (Connection refused)\n", run.Stderr);
        }
        finally
        {
            File.Delete(image);
        }
    }
}

/// <summary>
/// The etcd helper's lifetime is vdisk's: signals meant for vdisk's process group (Ctrl-C, a
/// service manager's stop) leave it to vdisk, which still needs it to release its keys, and it
/// never outlives vdisk, even when something else holds its input open.
/// </summary>
[Collection("etcd")]
public class EtcdHelperLifetimeTests(EtcdFixture etcd)
{
    private static bool Alive(int pid)
    {
        try
        {
            // Field 3 of stat is the state; a zombie has ended.
            string stat = File.ReadAllText($"/proc/{pid}/stat");
            return stat[(stat.LastIndexOf(')') + 2)..][0] != 'Z';
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            return false;
        }
    }

    /// <summary>The children of <paramref name="pid"/> named <paramref name="name"/> (/proc's comm).</summary>
    private static List<int> Children(int pid, string name) =>
        [.. Directory.GetDirectories($"/proc/{pid}/task")
            .SelectMany(task => File.ReadAllText(Path.Combine(task, "children")).Split(' ', StringSplitOptions.RemoveEmptyEntries))
            .Select(int.Parse)
            .Where(child => File.ReadAllText($"/proc/{child}/comm").TrimEnd('\n') == name)];

    /// <summary>kill -SIGNAL pid; false when there was no such process.</summary>
    private static bool Signal(string signal, int pid) =>
        Programs.Run("kill", $"-{signal}", pid.ToString(System.Globalization.CultureInfo.InvariantCulture)).ExitCode == 0;

    [Fact]
    public void SignalsToVdisksGroup_LeaveTheHelperServing_SoVdiskStillReleasesItsKeysAndLease()
    {
        using var scope = new ClusterScope(etcd.Cluster.Endpoints);
        using var dir = new TempDir();
        string image = ClusterImages.Qcow2(dir, "a.qcow2");
        using var holder = ChildProcess.Start(Programs.Vdisk, ["io", "--image-opts", ClusterScope.ImageOpts("qcow2", image, "g1"), "-c", "sleep 600000"], scope.Env("hostA"));
        ClusterScope.Until(() => scope.Holders("g1").Count == 1, "saw the holder in etcd");
        long lease = scope.Holders("g1")[0].Record.Lease;
        int helper = Assert.Single(Children(holder.Pid, "vdisk-etcd"));

        // As a Ctrl-C or `systemctl stop` does, the helper gets the signals too (first, the worst case).
        // (A helper that died of one is caught below, by what vdisk says and leaves behind.)
        Signal("TERM", helper);
        Signal("INT", helper);
        Signal("HUP", helper);
        Assert.True(Signal("INT", holder.Pid));
        var run = holder.Result(TimeSpan.FromSeconds(30));

        Assert.Equal("", run.Stderr);
        Assert.Equal(130, run.ExitCode);
        Assert.Empty(scope.Holders("g1"));
        // Revoked by vdisk on its way out, not left to expire (the TTL is 3 s).
        Assert.False(scope.LeaseAlive(lease));
        Assert.False(Alive(helper));
    }

    [Fact]
    public void ADaemonWithAClusterLock_LetsGoOfItsStartersStderr()
    {
        using var scope = new ClusterScope(etcd.Cluster.Endpoints);
        using var dir = new TempDir();
        string image = ClusterImages.Raw(dir, "a.raw"), pidFile = dir.File("serve.pid");
        int Daemon() => int.Parse(File.ReadAllText(pidFile).Trim(), System.Globalization.CultureInfo.InvariantCulture);
        try
        {
            // Programs.Run waits for the end of stdout and stderr: a helper that kept the daemon's
            // first stderr would hold it open for the daemon's life.
            var start = Programs.Run(Programs.Vdisk, ["serve", "--daemonize", "--pidfile", pidFile, "--blockdev", $"driver=file,node-name=f,filename={image},cluster-lock-id=d1"],
                scope.Env("hostA"), TimeSpan.FromSeconds(30));
            Assert.Equal((0, ""), (start.ExitCode, start.Stderr));
            int daemon = Daemon();
            // A node without users holds no lock bytes, so no keys; the session (lease) started the helper.
            int helper = Assert.Single(Children(daemon, "vdisk-etcd"));
            Assert.True(Signal("TERM", daemon));
            ClusterScope.Until(() => !Alive(daemon) && !Alive(helper), "saw the daemon and its helper end");
        }
        finally
        {
            if (File.Exists(pidFile) && Alive(Daemon())) Signal("KILL", Daemon());
        }
    }

    [Fact]
    public void TheHelper_EndsWithVdisk_EvenWhenItsInputStaysOpen()
    {
        string helperPath = Path.Combine(Path.GetDirectoryName(Programs.Vdisk)!, "vdisk-etcd");
        // A stand-in for vdisk that starts the helper and is then killed; this test keeps the
        // helper's input open (it is the stand-in's input, inherited), so only the kernel's
        // parent-death signal can end it.
        using var parent = ChildProcess.Start("bash",
            ["-c", "exec 3<&0; \"$0\" --endpoints http://127.0.0.1:1 <&3 & echo $!; exec sleep 600", helperPath], keepStdinOpen: true);
        parent.WaitFor((stdout, _) => stdout.EndsWith('\n'), "printed the helper's pid");
        int helper = int.Parse(parent.Stdout.Trim(), System.Globalization.CultureInfo.InvariantCulture);
        try
        {
            // An answer means the helper is serving, so it has asked for the signal (before its loop).
            var request = new Vdisk.Locking.Cluster.Agent.AgentRequest(1, Vdisk.Locking.Cluster.Agent.AgentOperation.Read, Prefix: "x/").Encode();
            var frame = new byte[4 + request.Length];
            System.Buffers.Binary.BinaryPrimitives.WriteInt32BigEndian(frame, request.Length);
            request.CopyTo(frame, 4);
            parent.StandardInput.BaseStream.Write(frame);
            parent.StandardInput.BaseStream.Flush();
            parent.WaitFor((stdout, _) => stdout.Contains("\"id\":1,", StringComparison.Ordinal), "the helper's answer");
            Assert.True(Signal("KILL", parent.Pid));
            ClusterScope.Until(() => !Alive(helper), "saw the helper end with its parent", TimeSpan.FromSeconds(10));
        }
        finally
        {
            if (Alive(helper)) Signal("KILL", helper);
        }
    }
}
