using System.Globalization;
using System.Text.Json;
using Vdisk.Interop.Support;
using Vdisk.Locking.Cluster;
using Vdisk.Server.Nbd;
using Xunit;
using static Vdisk.Interop.Cluster.ClusterScope;

namespace Vdisk.Interop.Cluster;

/// <summary>
/// What cluster locks promise when things go wrong: a dead holder keeps others out until its
/// lease expires and no longer; a stopped or cut-off holder fences itself and writes nothing
/// once another host may have the image; the etcd leader dying costs no holder its lock.
/// Every "before"/"after" is checked in etcd's own history (revisions), not on a clock.
/// </summary>
[Collection("etcd")]
public class ClusterFailureTests(EtcdFixture etcd)
{
    private static string Hex(long lease) => lease.ToString("x", CultureInfo.InvariantCulture);

    /// <summary>The revision at which the last key of <paramref name="holder"/> went, and the first at which <paramref name="other"/> put one.</summary>
    private static (long Gone, long Came) Succession(ClusterScope scope, List<KeyEvent> history, string holder, string other)
    {
        long gone = history.Where(e => !e.Put && e.Parsed(scope.Prefix)?.Holder == holder).Select(e => e.Revision).DefaultIfEmpty(long.MaxValue).Max();
        long came = history.Where(e => e.Put && e.Parsed(scope.Prefix)?.Holder == other).Select(e => e.Revision).DefaultIfEmpty(-1).Min();
        return (gone, came);
    }

    [Fact]
    public void KilledHolder_KeepsOthersOutUntilItsLeaseExpires_NotLonger()
    {
        using var scope = new ClusterScope(etcd.Cluster.Endpoints);
        using var dir = new TempDir();
        string a = ClusterImages.Qcow2(dir, "a.qcow2"), b = ClusterImages.Qcow2(dir, "b.qcow2");
        using var holder = ChildProcess.Start(Programs.Vdisk, ["io", "--image-opts", ImageOpts("qcow2", a, "k9")], scope.Env("hostA"), keepStdinOpen: true);
        Until(() => scope.Holders("k9").Count == 1, "saw the holder in etcd");
        var held = scope.Holders("k9")[0].Record;
        long start = EtcdHistory.Revision(scope);

        holder.Kill();
        // Nothing was released: the keys are there for as long as the lease lives.
        Assert.Single(scope.Holders("k9"));
        using var waiter = ChildProcess.Start(Programs.Vdisk, ["io", "--wait", "--image-opts", ImageOpts("qcow2", b, "k9"), "-c", "write 0 512"], scope.Env("hostB"));
        var r = waiter.Result();
        Assert.Equal(0, r.ExitCode);
        Assert.Equal($"vdisk: waiting for host hostA, pid {held.Pid} (vdisk io), which refuses to share \"write\" on '{b}' (Failed to get \"write\" lock)\n", r.Stderr);
        Assert.False(scope.LeaseAlive(held.Lease));

        var history = EtcdHistory.Since(scope, start);
        var deletions = history.Where(e => !e.Put && e.Parsed(scope.Prefix)?.Holder == held.Holder).ToList();
        // The keys went all at once (the lease expired), not one by one (a release).
        Assert.Equal(5, deletions.Count);
        Assert.Single(deletions.Select(e => e.Revision).Distinct());
        // The last holder of host B to put keys is the attempt that was admitted.
        string newcomer = history.Last(e => e.Put && e.Parsed(scope.Prefix)?.Holder != held.Holder).Parsed(scope.Prefix)!.Value.Holder;
        var (gone, came) = Succession(scope, history, held.Holder, newcomer);
        Assert.True(gone < came, $"host B put its first key at revision {came}, host A's lease expired at {gone}");
        // Host B's refused attempt put keys too (lock, then test) and took them back: before A's expiry.
        Assert.Contains(history, e => e.Put && e.Revision < gone && e.Parsed(scope.Prefix)?.Holder != held.Holder);
    }

    [Fact]
    public void StoppedHolder_WhoseLeaseExpired_WritesNothingAfterItResumes_AndSaysItWasFenced()
    {
        using var scope = new ClusterScope(etcd.Cluster.Endpoints);
        using var dir = new TempDir();
        string a = ClusterImages.Qcow2(dir, "a.qcow2"), b = ClusterImages.Qcow2(dir, "b.qcow2");
        using var holder = ChildProcess.Start(Programs.Vdisk, ["io", "--image-opts", ImageOpts("qcow2", a, "s1")], scope.Env("hostA"), keepStdinOpen: true);
        Until(() => scope.Holders("s1").Count == 1, "saw the holder in etcd");
        var held = scope.Holders("s1")[0].Record;
        byte[] before = ClusterImages.Bytes(a);
        long start = EtcdHistory.Revision(scope);

        Assert.Equal(0, Programs.Run("kill", "-STOP", holder.Pid.ToString(CultureInfo.InvariantCulture)).ExitCode);
        try
        {
            // Another host gets in once etcd let the stopped holder's lease expire.
            var taker = Programs.Run(Programs.Vdisk, ["io", "--wait", "--image-opts", ImageOpts("qcow2", b, "s1"), "-c", "write -P 0xbb 0 4k"], scope.Env("hostB"));
            Assert.Equal(0, taker.ExitCode);
            Assert.False(scope.LeaseAlive(held.Lease));
        }
        finally
        {
            Assert.Equal(0, Programs.Run("kill", "-CONT", holder.Pid.ToString(CultureInfo.InvariantCulture)).ExitCode);
        }
        holder.StandardInput.Write("write -P 0xaa 0 4k\nflush\n");
        holder.StandardInput.Close();
        var r = holder.Result();
        Assert.Contains("write failed: Input/output error\n", r.Stdout);
        // qemu-io reports a failed flush by its exit status only (the serve test sees the flush's EIO).
        Assert.Equal(1, r.ExitCode);
        Assert.DoesNotContain("wrote", r.Stdout);
        Assert.Contains($"vdisk: warning: cluster lease {Hex(held.Lease)} was lost (", r.Stderr);
        Assert.Contains("this process fenced itself and writes nothing more under it\n", r.Stderr);
        Assert.Equal(before, ClusterImages.Bytes(a));
        var history = EtcdHistory.Since(scope, start);
        string newcomer = history.Last(e => e.Put).Parsed(scope.Prefix)!.Value.Holder;
        var (gone, came) = Succession(scope, history, held.Holder, newcomer);
        Assert.True(gone < came);
    }

    private static JsonElement ClusterLockOf(QmpClient monitor, string node)
    {
        var nodes = JsonDocument.Parse(monitor.Execute("{\"execute\":\"query-named-block-nodes\"}")).RootElement.GetProperty("return");
        return nodes.EnumerateArray().Single(n => n.GetProperty("node-name").GetString() == node).GetProperty("x-vdisk-cluster-lock").Clone();
    }

    private static void NbdWrite(string socket, ulong offset, byte pattern, int length = 4096)
    {
        using var c = new NbdClient(socket);
        c.Open("disk");
        c.SendRequest(NbdCommand.Write, 1, offset, (uint)length, payload: Enumerable.Repeat(pattern, length).ToArray());
        var reply = c.ReadReply();
        if (reply.ErrorNumber != NbdError.None) throw new IOException($"write failed: {reply.ErrorNumber}");
    }

    private static (NbdError Write, NbdError Flush, NbdError Trim) NbdWriteErrors(string socket)
    {
        using var c = new NbdClient(socket);
        c.Open("disk");
        c.SendRequest(NbdCommand.Write, 1, 8192, 512, payload: Enumerable.Repeat((byte)0x77, 512).ToArray());
        var write = c.ReadReply().ErrorNumber;
        c.SendRequest(NbdCommand.Flush, 2, 0, 0);
        var flush = c.ReadReply().ErrorNumber;
        c.SendRequest(NbdCommand.Trim, 3, 0, 4096);
        var trim = c.ReadReply().ErrorNumber;
        return (write, flush, trim);
    }

    [Fact]
    public void PartitionedServe_FencesItselfBeforeItsLeaseRunsOut_AnswersEio_AndTheOtherHostGetsIn()
    {
        // TTL 4 s, fence after 2 s without a confirmed renewal: 2 s in which etcd still has the lease.
        using var scope = new ClusterScope(etcd.Cluster.Endpoints, ttlSeconds: 4, fenceMargin: 2);
        using var dir = new TempDir();
        string a = ClusterImages.Raw(dir, "a.raw", 4 << 20), b = ClusterImages.Raw(dir, "b.raw", 4 << 20);
        using var proxy = new TcpProxy(etcd.Cluster.Endpoint(0));
        string nbd = dir.File("a.nbd"), qmp = dir.File("a.qmp");
        using var serve = ChildProcess.Start(Programs.Vdisk, ["serve",
            "--blockdev", $"driver=file,node-name=disk-file,filename={a},cluster-lock-id=p1",
            "--blockdev", "driver=raw,node-name=disk,file=disk-file",
            .. Serve.NbdServer(nbd), .. Serve.Export(writable: true), .. Serve.Monitor(qmp)], scope.Env("hostA", proxy.Url));
        Until(() => File.Exists(qmp) && scope.Holders("p1").Count == 1, "saw the daemon hold the image");
        var held = scope.Holders("p1")[0];
        using var monitor = QmpClient.Connect(qmp);
        monitor.Execute("{\"execute\":\"qmp_capabilities\"}");
        var info = ClusterLockOf(monitor, "disk-file");
        Assert.Equal(("p1", "hostA", held.Record.LeaseHex, held.Revision, held.FencingToken, false),
            (info.GetProperty("lock-id").GetString(), info.GetProperty("host").GetString(), info.GetProperty("lease").GetString(),
             info.GetProperty("revision").GetInt64(), info.GetProperty("fencing-token").GetString(), info.GetProperty("fenced").GetBoolean()));
        Assert.Equal(held.FencingToken, ClusterLockOf(monitor, "disk").GetProperty("fencing-token").GetString());
        NbdWrite(nbd, 0, 0x5a);
        NbdWrite(nbd, 1 << 20, 0xa5);
        long start = EtcdHistory.Revision(scope);

        proxy.Cut();
        using var fenced = JsonDocument.Parse(monitor.NextEvent());
        // The daemon stopped writing while etcd still kept its lease: nobody else could have the image yet.
        Assert.True(scope.LeaseAlive(held.Record.Lease));
        Assert.Equal("X_VDISK_CLUSTER_FENCED", fenced.RootElement.GetProperty("event").GetString());
        var data = fenced.RootElement.GetProperty("data");
        Assert.Equal(("disk-file", "p1", held.FencingToken),
            (data.GetProperty("node-name").GetString(), data.GetProperty("cluster-lock-id").GetString(), data.GetProperty("fencing-token").GetString()));
        Assert.StartsWith("no keep-alive confirmed within 2 s", data.GetProperty("reason").GetString());
        Assert.Equal(["disk-file", "disk"], data.GetProperty("inactive-nodes").EnumerateArray().Select(e => e.GetString()!));
        Assert.Equal((NbdError.IO, NbdError.IO, NbdError.IO), NbdWriteErrors(nbd));
        Assert.True(ClusterLockOf(monitor, "disk").GetProperty("fenced").GetBoolean());
        string nodes = monitor.Execute("{\"execute\":\"query-named-block-nodes\"}");
        Assert.DoesNotContain("\"active\": true", nodes);

        // The other host's writer (the export refuses other writers) gets in once the lease expires.
        var taker = Programs.Run(Programs.Vdisk, ["io", "--wait", "--image-opts", ImageOpts("raw", b, "p1"), "-c", "write -P 0xbb 0 4k"], scope.Env("hostB"));
        Assert.Equal(0, taker.ExitCode);
        Assert.StartsWith($"vdisk: waiting for host hostA, pid {serve.Pid} (vdisk serve)", taker.Stderr);
        var history = EtcdHistory.Since(scope, start);
        string newcomer = history.Last(e => e.Put).Parsed(scope.Prefix)!.Value.Holder;
        var (gone, came) = Succession(scope, history, held.Record.Holder, newcomer);
        Assert.True(gone < came);

        // What was written before the cut is intact; nothing after it reached the file.
        byte[] image = ClusterImages.Bytes(a);
        Assert.All(image.AsSpan(0, 4096).ToArray(), x => Assert.Equal(0x5a, x));
        Assert.All(image.AsSpan(1 << 20, 4096).ToArray(), x => Assert.Equal(0xa5, x));
        Assert.All(image.AsSpan(8192, 512).ToArray(), x => Assert.Equal(0, x));

        // It never resumes on its own, not even once etcd is reachable again; an explicit
        // activation takes the image afresh under a new lease.
        proxy.Heal();
        Assert.Equal((NbdError.IO, NbdError.IO, NbdError.IO), NbdWriteErrors(nbd));
        Assert.Empty(scope.Holders("p1"));
        Assert.Equal("{\"return\": {}}", monitor.Execute("{\"execute\":\"blockdev-set-active\",\"arguments\":{\"node-name\":\"disk\",\"active\":true}}"));
        var renewed = ClusterLockOf(monitor, "disk-file");
        Assert.False(renewed.GetProperty("fenced").GetBoolean());
        Assert.NotEqual(held.Record.LeaseHex, renewed.GetProperty("lease").GetString());
        Assert.Equal(renewed.GetProperty("lease").GetString(), Assert.Single(scope.Holders("p1")).Record.LeaseHex);
        NbdWrite(nbd, 8192, 0x3c, 512);
        Assert.All(ClusterImages.Bytes(a).AsSpan(8192, 512).ToArray(), x => Assert.Equal(0x3c, x));
    }

    [Fact]
    public void KillingTheEtcdLeader_CostsNoHolderItsLock_AndAdmitsNoSecondWriter()
    {
        // A cluster of its own: this test kills one member.
        using var cluster = EtcdCluster.Start(3);
        // The holders must outlive an election: TTL minus the fence margin (here 8 - 1.6 s) has to
        // cover electing a leader and one renewal, which takes seconds on a loaded 2-core machine.
        using var scope = new ClusterScope(cluster.Endpoints, ttlSeconds: 8);
        using var dir = new TempDir();
        var holders = new List<ChildProcess>();
        var contenders = new List<ChildProcess>();
        try
        {
            for (int i = 0; i < 3; i++)
            {
                string id = "L" + i.ToString(CultureInfo.InvariantCulture);
                string a = ClusterImages.Qcow2(dir, id + "-a.qcow2"), b = ClusterImages.Qcow2(dir, id + "-b.qcow2");
                holders.Add(ChildProcess.Start(Programs.Vdisk, ["io", "--image-opts", ImageOpts("qcow2", a, id)], scope.Env("holder" + i), keepStdinOpen: true));
                Until(() => scope.Holders(id).Count == 1, "saw holder " + id);
                contenders.Add(ChildProcess.Start(Programs.Vdisk, ["io", "--wait", "--image-opts", ImageOpts("qcow2", b, id), "-c", "write 0 512"], scope.Env("contender" + i)));
                contenders[^1].WaitForStderr("waiting for host holder", TimeSpan.FromSeconds(60));
            }
            var leases = Enumerable.Range(0, 3).Select(i => scope.Holders("L" + i.ToString(CultureInfo.InvariantCulture))[0].Record.Lease).ToList();

            int leader = cluster.Leader();
            Assert.NotEqual(-1, leader);
            cluster.Kill(leader);
            // A lease granted after the kill and never renewed: once etcd expires it, a whole TTL
            // has passed in etcd's own time since the leader died.
            long reference = scope.GrantLease(scope.TtlSeconds);
            Until(() => !scope.LeaseAlive(reference), "saw the reference lease expire", TimeSpan.FromSeconds(120));

            for (int i = 0; i < 3; i++)
            {
                Assert.True(scope.LeaseAlive(leases[i]));
                Assert.Single(scope.Holders("L" + i.ToString(CultureInfo.InvariantCulture)));
                // Nobody else was admitted: each contender still waits.
                Assert.False(contenders[i].HasExited, contenders[i].Stderr);
                holders[i].StandardInput.Write("write -P 0x42 0 512\n");
                holders[i].StandardInput.Flush();
                holders[i].WaitForStdout("wrote 512/512 bytes at offset 0\n", TimeSpan.FromSeconds(60));
                Assert.DoesNotContain("fenced", holders[i].Stderr);
            }
            // The contenders were waiting for real: each gets in once its holder leaves.
            for (int i = 0; i < 3; i++)
            {
                holders[i].StandardInput.Close();
                Assert.Equal(0, holders[i].Result().ExitCode);
                var r = contenders[i].Result();
                Assert.Equal(0, r.ExitCode);
                Assert.StartsWith("wrote 512/512 bytes at offset 0\n", r.Stdout);
            }
        }
        finally
        {
            foreach (var c in contenders) c.Dispose();
            foreach (var h in holders) h.Dispose();
        }
    }
}
