using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using Vdisk.Inspection;
using Vdisk.Interop.Support;
using Vdisk.Locking;
using Vdisk.Locking.Cluster;
using Vdisk.Permissions;
using Xunit;
using static Vdisk.Interop.Cluster.ClusterScope;

namespace Vdisk.Interop.Cluster;

/// <summary>
/// Cluster locks between "hosts" (separate vdisk processes with distinct host ids, each with its
/// own path to the image) on a real 3-member etcd cluster: QEMU's verdicts and messages plus the
/// holder, the local OFD bytes still there for QEMU on the same host, --wait on a watch, and one
/// clear line for every configuration mistake.
/// </summary>
[Collection("etcd")]
public class ClusterLockTests(EtcdFixture etcd)
{
    [Fact]
    public void WriterOnOneHost_RefusesWriterAndReaderOnAnother_NamingIt_AndQemuOnItsHostStillSeesItsLocks()
    {
        using var scope = new ClusterScope(etcd.Cluster.Endpoints);
        using var dir = new TempDir();
        string a = ClusterImages.Qcow2(dir, "a.qcow2"), b = ClusterImages.Qcow2(dir, "b.qcow2");
        using var holder = ChildProcess.Start(Programs.Vdisk, ["io", "--image-opts", ImageOpts("qcow2", a, "vm42")], scope.Env("hostA"), keepStdinOpen: true);
        Until(() => scope.Holders("vm42").Count == 1, "saw the holder in etcd");
        var held = scope.Holders("vm42")[0];
        Assert.Equal(("hostA", holder.Pid, "vdisk io", a), (held.Record.Host, held.Record.Pid, held.Record.Command, held.Record.File));
        Assert.Equal([100, 101, 103, 201, 203], held.Bytes);

        var writer = Programs.Run(Programs.Vdisk, ["io", "--image-opts", ImageOpts("qcow2", b, "vm42"), "-c", "write 0 512"], scope.Env("hostB"));
        Assert.Equal(1, writer.ExitCode);
        Assert.Equal($"vdisk: can't open: Failed to get \"write\" lock\nIs another process using the image [{b}]?\nheld by host hostA, pid {holder.Pid} (vdisk io)\n", writer.Stderr);
        var reader = Programs.Run(Programs.Vdisk, ["io", "-r", "--image-opts", ImageOpts("qcow2", b, "vm42"), "-c", "read 0 512"], scope.Env("hostB"));
        Assert.Equal(1, reader.ExitCode);
        Assert.Equal($"vdisk: can't open: Failed to get shared \"write\" lock\nIs another process using the image [{b}]?\nheld by host hostA, pid {holder.Pid} (vdisk io)\n", reader.Stderr);
        // The refused openers left nothing behind.
        Assert.Single(scope.Holders("vm42"));

        // QEMU on the holder's host knows nothing of etcd, and is refused by the OFD bytes as before.
        var qemu = Programs.Run("qemu-io", "-f", "qcow2", a, "-c", "read 0 512");
        Assert.Equal(1, qemu.ExitCode);
        Assert.Equal($"qemu-io: can't open device {a}: Failed to get \"write\" lock\nIs another process using the image [{a}]?\n", qemu.Stderr);

        // vdisk locks --cluster names the holder, its fencing token and the verdict.
        var locks = Programs.Run(Programs.Vdisk, ["locks", "--cluster", "vm42", "--for", "write", "-f", "qcow2"], scope.Env("hostB"));
        Assert.Equal(1, locks.ExitCode);
        Assert.Matches(new Regex($"^vm42: 1 holder\\(s\\)\n  HOST +PID +TOKEN +TTL +BYTES +HOLDS +REFUSES +FILE +COMMAND\n" +
            $"  hostA +{holder.Pid} +{held.FencingToken} +\\d+s +100,101,103,201,203 +consistent read, write, resize +write, resize +{Regex.Escape(a)} +vdisk io\n" +
            $"  write \\(qemu-io -f qcow2\\): blocked: Failed to get \"write\" lock\\. Host hostA, pid {holder.Pid} \\(vdisk io\\) refuses to share \"write\" \\(lock byte 201\\), which this open takes\\.\n$"), locks.Stdout);

        // The same as JSON, every holder with its host id, PID and fencing token; listing every id held.
        var json = Programs.Run(Programs.Vdisk, ["locks", "--cluster", "--output", "json", "--for", "write", "-f", "qcow2"], scope.Env("hostB"));
        Assert.Equal(1, json.ExitCode);
        var image = Assert.Single(JsonDocument.Parse(json.Stdout).RootElement.GetProperty("images").EnumerateArray());
        Assert.Equal("vm42", image.GetProperty("lock-id").GetString());
        var jsonHolder = Assert.Single(image.GetProperty("holders").EnumerateArray());
        Assert.Equal(("hostA", holder.Pid, "vdisk io", held.FencingToken, held.Record.LeaseHex),
            (jsonHolder.GetProperty("host").GetString(), jsonHolder.GetProperty("pid").GetInt32(), jsonHolder.GetProperty("command").GetString(),
             jsonHolder.GetProperty("fencing-token").GetString(), jsonHolder.GetProperty("lease").GetString()));
        var verdict = Assert.Single(image.GetProperty("verdicts").EnumerateArray());
        Assert.Equal(("write", false), (verdict.GetProperty("mode").GetString(), verdict.GetProperty("admitted").GetBoolean()));

        holder.StandardInput.Close();
        Assert.Equal(0, holder.Result().ExitCode);
        Assert.Empty(scope.AllKeys());
        var after = Programs.Run(Programs.Vdisk, ["io", "--image-opts", ImageOpts("qcow2", b, "vm42"), "-c", "write 0 512"], scope.Env("hostB"));
        Assert.Equal(0, after.ExitCode);
    }

    [Fact]
    public void QemuHoldingTheImageOnTheSameHost_RefusesAClusterLockedOpenerWithQemusMessage()
    {
        using var scope = new ClusterScope(etcd.Cluster.Endpoints);
        using var dir = new TempDir();
        string a = ClusterImages.Qcow2(dir, "a.qcow2");
        using var qemu = ChildProcess.Start("qemu-io", ["-f", "qcow2", a], keepStdinOpen: true);
        Until(() => LocksOf(a) > 0, "saw qemu-io's locks");
        var r = Programs.Run(Programs.Vdisk, ["io", "--image-opts", ImageOpts("qcow2", a, "vm42"), "-c", "write 0 512"], scope.Env("hostA"));
        Assert.Equal(1, r.ExitCode);
        Assert.Equal($"vdisk: can't open: Failed to get \"write\" lock\nIs another process using the image [{a}]?\n", r.Stderr);
        Assert.Empty(scope.AllKeys());
    }

    private static int LocksOf(string path) => new LockInspector().Inspect(path).Holders.Count;

    /// <summary>The requests on the image file of every mode vdisk locks judges, raw and qcow2.</summary>
    public static IEnumerable<PermissionPair> FileRequests() =>
        AccessModes.All.SelectMany(m => new[] { AccessModes.FileRequest(m, "raw"), AccessModes.FileRequest(m, "qcow2") }).Distinct();

    private static string Words(BlockPermission p) => p == BlockPermission.None ? "-" : string.Join(',', BlockPermissions.Bits(p).Select(b => b switch
    {
        BlockPermission.ConsistentRead => "read",
        BlockPermission.Write => "write",
        BlockPermission.WriteUnchanged => "write-unchanged",
        _ => "resize",
    }));

    private static string Go(PermissionPair p) => $"go {Words(p.Perm)} {Words(p.Unshared)}";

    [Fact]
    public void EveryPairOfModes_GetsTheSameVerdictAndMessageAcrossHostsAsOnOneHost()
    {
        using var scope = new ClusterScope(etcd.Cluster.Endpoints);
        using var dir = new TempDir();
        string a = ClusterImages.Raw(dir, "a.raw"), b = ClusterImages.Raw(dir, "b.raw"), local = ClusterImages.Raw(dir, "local.raw");
        using var hostA = ProbeWorker.Start("opts:" + $"driver=file,filename={a},cluster-lock-id=matrix", scope.Env("hostA"));
        using var hostB = ProbeWorker.Start("opts:" + $"driver=file,filename={b},cluster-lock-id=matrix", scope.Env("hostB"));
        using var first = ProbeWorker.Start("opts:" + $"driver=file,filename={local}", null);
        using var second = ProbeWorker.Start("opts:" + $"driver=file,filename={local}", null);
        var requests = FileRequests().ToList();
        int refusals = 0;
        foreach (var held in requests)
        {
            foreach (var asked in requests)
            {
                Assert.Equal("admitted", first.Ask(Go(held)));
                string expected = second.Ask(Go(asked));
                Assert.Equal("admitted", hostA.Ask(Go(held)));
                string actual = hostB.Ask(Go(asked));
                Assert.True(expected == actual, $"{held} held, {asked} asked: locally '{expected}', across hosts '{actual}'");
                if (expected != "admitted") refusals++;
                foreach (var w in new[] { first, second, hostA, hostB }) Assert.Equal("released", w.Ask("release"));
            }
        }
        // The matrix has both outcomes, so the comparison means something.
        Assert.InRange(refusals, 1, requests.Count * requests.Count - 1);
        Assert.Empty(scope.AllKeys());
    }

    [Fact]
    public void Wait_QueuesBehindAHolderOnAnotherHost_OnAWatch_NotByPolling()
    {
        using var scope = new ClusterScope(etcd.Cluster.Endpoints);
        using var dir = new TempDir();
        string a = ClusterImages.Qcow2(dir, "a.qcow2"), b = ClusterImages.Qcow2(dir, "b.qcow2");
        using var holder = ChildProcess.Start(Programs.Vdisk, ["io", "--image-opts", ImageOpts("qcow2", a, "vm7")], scope.Env("hostA"), keepStdinOpen: true);
        Until(() => scope.Holders("vm7").Count == 1, "saw the holder in etcd");
        using var waiter = ChildProcess.Start(Programs.Vdisk, ["io", "--wait", "--image-opts", ImageOpts("qcow2", b, "vm7"), "-c", "write -P 0x5a 0 512"], scope.Env("hostB"));
        waiter.WaitForStderr("\n", TimeSpan.FromSeconds(60));
        Assert.Equal($"vdisk: waiting for host hostA, pid {holder.Pid} (vdisk io), which refuses to share \"write\" on '{b}' (Failed to get \"write\" lock)\n", waiter.Stderr);

        // While the holder renews its lease several times over (more than a second at TTL 3 s,
        // when a poller would have retried every 200 ms), the waiter sends etcd nothing.
        var metrics = new EtcdMetrics(etcd.Cluster);
        long txns = metrics.Sum("grpc_server_handled_total", "grpc_method=\"Txn\"");
        long renewals = metrics.Sum("grpc_server_msg_received_total", "grpc_method=\"LeaseKeepAlive\"");
        Until(() => metrics.Sum("grpc_server_msg_received_total", "grpc_method=\"LeaseKeepAlive\"") >= renewals + 4, "saw the holder renew four times");
        Assert.Equal(txns, metrics.Sum("grpc_server_handled_total", "grpc_method=\"Txn\""));
        Assert.False(waiter.HasExited);

        holder.StandardInput.Close();
        Assert.Equal(0, holder.Result().ExitCode);
        var r = waiter.Result();
        Assert.Equal(0, r.ExitCode);
        Assert.StartsWith("wrote 512/512 bytes at offset 0\n", r.Stdout);
    }

    [Fact]
    public void EtcdDownAtStart_IsOneLineNamingTheEndpoints_AndNothingIsLocked()
    {
        using var scope = new ClusterScope(etcd.Cluster.Endpoints);
        using var dir = new TempDir();
        string a = ClusterImages.Qcow2(dir, "a.qcow2");
        string dead = "http://127.0.0.1:1,http://127.0.0.1:2";
        var r = Programs.Run(Programs.Vdisk, ["io", "--image-opts", ImageOpts("qcow2", a, "vm9"), "-c", "write 0 512"], scope.Env("hostA", dead));
        Assert.Equal(1, r.ExitCode);
        Assert.Equal("vdisk: can't open: etcd unreachable while granting a lease: http://127.0.0.1:1 (Connection refused), http://127.0.0.1:2 (Connection refused)\n", r.Stderr);
        Assert.Equal(0, LocksOf(a));
        // The same through --cluster, and for serve's --blockdev.
        var viaOption = Programs.Run(Programs.Vdisk, ["io", "--cluster", "endpoints=" + dead, "--image-opts", ImageOpts("qcow2", a, "vm9"), "-c", "write 0 512"], scope.Env("hostA"));
        Assert.Equal(r.Stderr, viaOption.Stderr);
        var attached = Programs.Run(Programs.Vdisk, ["info", "--cluster=endpoints=" + dead, "--image-opts", ImageOpts("qcow2", a, "vm9")], scope.Env("hostA"));
        Assert.Equal((1, $"vdisk: Could not open '{ImageOpts("qcow2", a, "vm9")}': etcd unreachable while granting a lease: http://127.0.0.1:1 (Connection refused), http://127.0.0.1:2 (Connection refused)\n"), (attached.ExitCode, attached.Stderr));
        // serve's --blockdev takes it too, also in the detached child of --daemonize.
        var noEndpoints = scope.Env("hostA");
        noEndpoints.Remove("VDISK_ETCD_ENDPOINTS");
        string blockdev = $"driver=file,node-name=f,filename={a},cluster-lock-id=vm9";
        string serveError = $"vdisk: --blockdev {blockdev}: etcd unreachable while granting a lease: http://127.0.0.1:1 (Connection refused), http://127.0.0.1:2 (Connection refused)\n";
        var serve = Programs.Run(Programs.Vdisk, ["serve", "--cluster", "endpoints=" + dead, "--blockdev", blockdev], noEndpoints);
        Assert.Equal((1, serveError), (serve.ExitCode, serve.Stderr));
        var detached = Programs.Run(Programs.Vdisk, ["serve", "--daemonize", "--cluster", "endpoints=" + dead, "--blockdev", blockdev], noEndpoints);
        Assert.Equal((1, serveError), (detached.ExitCode, detached.Stderr));
        // vdisk locks --cluster takes the endpoints as the next word, then the ids.
        var locks = Programs.Run(Programs.Vdisk, ["locks", "--cluster", "endpoints=" + dead, "vm9"], noEndpoints);
        Assert.Equal(2, locks.ExitCode);
        Assert.Contains("http://127.0.0.1:1 (Connection refused)", locks.Stderr);
        Assert.Equal(0, LocksOf(a));
        Assert.Empty(scope.AllKeys());
    }

    [Theory]
    [InlineData("VDISK_ETCD_ENDPOINTS", "127.0.0.1:2379", "vdisk: can't open: VDISK_ETCD_ENDPOINTS: invalid etcd endpoint '127.0.0.1:2379': expected http://HOST:PORT or https://HOST:PORT\n")]
    [InlineData("VDISK_ETCD_TTL", "0", "vdisk: can't open: VDISK_ETCD_TTL: invalid lease TTL '0': expected whole seconds from 2 to 86400\n")]
    [InlineData("VDISK_ETCD_TTL", "3s", "vdisk: can't open: VDISK_ETCD_TTL: invalid lease TTL '3s': expected whole seconds from 2 to 86400\n")]
    [InlineData("VDISK_HOST_ID", "my host", "vdisk: can't open: VDISK_HOST_ID: invalid host id 'my host': expected 1 to 64 printable ASCII characters without '/' or spaces\n")]
    public void BadSettings_AreOneLineEach(string variable, string value, string expected)
    {
        using var scope = new ClusterScope(etcd.Cluster.Endpoints);
        using var dir = new TempDir();
        string a = ClusterImages.Qcow2(dir, "a.qcow2");
        var env = scope.Env("hostA");
        env[variable] = value;
        var r = Programs.Run(Programs.Vdisk, ["io", "--image-opts", ImageOpts("qcow2", a, "vm9"), "-c", "write 0 512"], env);
        Assert.Equal((1, expected), (r.ExitCode, r.Stderr));
        Assert.Equal(0, LocksOf(a));
        Assert.Empty(scope.AllKeys());
    }

    [Fact]
    public void BadIdAndNoEndpointsAndBadClusterOption_AreOneLineEach()
    {
        using var scope = new ClusterScope(etcd.Cluster.Endpoints);
        using var dir = new TempDir();
        string a = ClusterImages.Qcow2(dir, "a.qcow2");
        var badId = Programs.Run(Programs.Vdisk, ["io", "--image-opts", ImageOpts("qcow2", a, "vm/42"), "-c", "read 0 512"], scope.Env("hostA"));
        Assert.Equal((1, "vdisk: can't open: Invalid cluster-lock-id 'vm/42': expected 1 to 200 letters, digits and -_.:@+\n"), (badId.ExitCode, badId.Stderr));
        // auto stands for a block device's WWID: a regular file has none that means anything on another host.
        var auto = Programs.Run(Programs.Vdisk, ["io", "--image-opts", ImageOpts("qcow2", a, "auto"), "-c", "read 0 512"], scope.Env("hostA"));
        Assert.Equal((1, $"vdisk: can't open: cluster-lock-id=auto needs a block device with a WWID, dm UUID or serial; '{a}' is not a block device: give the image an id of its own\n"),
            (auto.ExitCode, auto.Stderr));
        Assert.Equal(0, LocksOf(a));
        var env = scope.Env("hostA");
        env.Remove("VDISK_ETCD_ENDPOINTS");
        var none = Programs.Run(Programs.Vdisk, ["io", "--image-opts", ImageOpts("qcow2", a, "vm42"), "-c", "read 0 512"], env);
        Assert.Equal((1, "vdisk: can't open: cluster-lock-id 'vm42' needs etcd endpoints: set VDISK_ETCD_ENDPOINTS=http://HOST:PORT[,...] or --cluster endpoints=...\n"), (none.ExitCode, none.Stderr));
        var badOption = Programs.Run(Programs.Vdisk, ["info", "--cluster", "ttl=1", a], scope.Env("hostA"));
        Assert.Equal((1, "vdisk: --cluster ttl: invalid lease TTL '1': expected whole seconds from 2 to 86400\n"), (badOption.ExitCode, badOption.Stderr));
        // locking=off: no locks at all, so no etcd either (the endpoints here do not exist).
        env["VDISK_ETCD_ENDPOINTS"] = "http://127.0.0.1:1";
        var off = Programs.Run(Programs.Vdisk, ["io", "--image-opts", ImageOpts("qcow2", a, "vm42", ",file.locking=off"), "-c", "write 0 512"], env);
        Assert.Equal(0, off.ExitCode);
        Assert.Equal("", off.Stderr);
    }

    [Fact]
    public void OneIdForTwoImagesOnOneHost_IsRefusedWithOneLine()
    {
        using var scope = new ClusterScope(etcd.Cluster.Endpoints);
        using var dir = new TempDir();
        string a = ClusterImages.Qcow2(dir, "a.qcow2"), other = ClusterImages.Qcow2(dir, "other.qcow2");
        using var holder = ChildProcess.Start(Programs.Vdisk, ["io", "-r", "-U", "--image-opts", ImageOpts("qcow2", a, "vm42")], scope.Env("hostA"), keepStdinOpen: true);
        Until(() => scope.Holders("vm42").Count == 1, "saw the holder in etcd");
        var held = scope.Holders("vm42")[0].Record;
        var r = Programs.Run(Programs.Vdisk, ["io", "-r", "-U", "--image-opts", ImageOpts("qcow2", other, "vm42"), "-c", "read 0 512"], scope.Env("hostA"));
        Assert.Equal(1, r.ExitCode);
        string inode = Programs.Run("stat", "-c", "%i", other).Stdout.Trim();
        string otherId = held.FileId![..held.FileId!.LastIndexOf(':')] + ":" + inode;
        Assert.Equal($"vdisk: can't open: cluster-lock-id 'vm42' already names another image: host hostA, pid {holder.Pid} (vdisk io) holds it for '{a}' ({held.FileId}), " +
            $"this open is for '{other}' ({otherId})\n", r.Stderr);
        Assert.Single(scope.Holders("vm42"));
        Assert.Equal(0, LocksOf(other));
    }
}
