using Vdisk.Interop.Support;
using Vdisk.Server.Nbd;
using Xunit;
using static Vdisk.Interop.Cluster.ClusterScope;

namespace Vdisk.Interop.Cluster;

/// <summary>
/// Migration between two hosts: two vdisk serve on different hosts hand an image over with
/// blockdev-set-active, the cluster locks doing what the OFD bytes do on one host (each host has
/// its own path to the image, so only etcd connects them). etcd's history, replayed revision by
/// revision, shows the two daemons never both holding write, and a writer on a third host is
/// refused at every step, the gap between source and destination included (vdisk's reservation).
/// </summary>
[Collection("etcd")]
public class ClusterHandoverTests(EtcdFixture etcd)
{
    private sealed class Side(ChildProcess process, QmpClient qmp, string nbd) : IDisposable
    {
        public ChildProcess Process { get; } = process;
        public string Nbd { get; } = nbd;

        public string Execute(string json) => qmp.Execute(json);

        public string SetActive(bool active) =>
            Execute($"{{\"execute\":\"blockdev-set-active\",\"arguments\":{{\"node-name\":\"disk\",\"active\":{(active ? "true" : "false")}}}}}");

        public string Reserve() => Execute("{\"execute\":\"x-vdisk-blockdev-reserve\",\"arguments\":{\"node-name\":\"disk\",\"reserve\":true}}");

        public void Dispose()
        {
            qmp.Dispose();
            Process.Dispose();
        }
    }

    private static Side Start(ClusterScope scope, TempDir dir, string host, string image, bool active)
    {
        string nbd = dir.File(host + ".nbd"), qmp = dir.File(host + ".qmp");
        string act = active ? "" : ",active=off";
        var process = ChildProcess.Start(Programs.Vdisk, ["serve",
            "--blockdev", $"driver=file,node-name=disk-file,filename={image},cluster-lock-id=mig{act}",
            "--blockdev", $"driver=raw,node-name=disk,file=disk-file{act}",
            .. Serve.NbdServer(nbd), .. Serve.Export(writable: true), .. Serve.Monitor(qmp)], scope.Env(host));
        Until(() => File.Exists(qmp) && File.Exists(nbd) || process.HasExited, "saw the daemon listen");
        Assert.False(process.HasExited, process.Stderr);
        var client = QmpClient.Connect(qmp);
        client.Execute("{\"execute\":\"qmp_capabilities\"}");
        return new Side(process, client, nbd);
    }

    private static string Intruder(ClusterScope scope, string image)
    {
        var r = Programs.Run(Programs.Vdisk, ["io", "--image-opts", ImageOpts("raw", image, "mig"), "-c", "write -P 0xee 0 4k"], scope.Env("hostC"));
        return r.ExitCode == 0 ? "admitted" : r.Stderr.Split('\n')[0];
    }

    private static NbdError Write(string socket)
    {
        using var c = new NbdClient(socket);
        c.Open("disk");
        c.SendRequest(NbdCommand.Write, 1, 0, 4096, payload: Enumerable.Repeat((byte)0x5a, 4096).ToArray());
        return c.ReadReply().ErrorNumber;
    }

    [Fact]
    public void HandoverBetweenHosts_NeverTwoWriters_AndNoThirdWriterInTheGap()
    {
        using var scope = new ClusterScope(etcd.Cluster.Endpoints);
        using var dir = new TempDir();
        string a = ClusterImages.Raw(dir, "a.raw", 4 << 20), b = ClusterImages.Raw(dir, "b.raw", 4 << 20), c = ClusterImages.Raw(dir, "c.raw", 4 << 20);
        using var source = Start(scope, dir, "hostA", a, active: true);
        using var destination = Start(scope, dir, "hostB", b, active: false);
        Until(() => scope.Holders("mig").Count == 1, "saw the source hold the image");
        var sourceLease = scope.Holders("mig")[0].Record.LeaseHex;
        Assert.Equal(NbdError.None, Write(source.Nbd));
        const string refused = "vdisk: can't open: Failed to get \"write\" lock";

        // The destination cannot activate while the source holds the image.
        Assert.Equal($"{{\"error\": {{\"class\": \"GenericError\", \"desc\": \"Failed to get \\\"write\\\" lock, held by host hostA, pid {source.Process.Pid} (vdisk serve)\"}}}}", destination.SetActive(true));

        var initial = scope.Snapshot();
        var outcomes = new List<string> { "before: " + Intruder(scope, c) };
        Assert.Equal("{\"return\": {}}", destination.Reserve());
        outcomes.Add("reserved: " + Intruder(scope, c));
        Assert.Equal("{\"return\": {}}", source.SetActive(false));
        Assert.Equal(NbdError.Perm, Write(source.Nbd));
        outcomes.Add("gap: " + Intruder(scope, c));
        Assert.Equal("{\"return\": {}}", destination.SetActive(true));
        outcomes.Add("after: " + Intruder(scope, c));
        Assert.Equal(NbdError.None, Write(destination.Nbd));
        Assert.Equal(["before: " + refused, "reserved: " + refused, "gap: " + refused, "after: " + refused], outcomes);

        // Every state etcd had in between: at most one of the two daemons held "write" (byte 101).
        var history = EtcdHistory.Since(scope, initial.Revision);
        var destinationLease = scope.Holders("mig").Single().Record.LeaseHex;
        Assert.NotEqual(sourceLease, destinationLease);
        bool Daemon(string holder) => holder.StartsWith(sourceLease + ".", StringComparison.Ordinal) || holder.StartsWith(destinationLease + ".", StringComparison.Ordinal);
        var live = initial.Entries.Select(e => e.Key).ToList();
        var states = EtcdHistory.HoldersOfByte(scope.Prefix, live.Select(k => new KeyEvent(initial.Revision, true, k, 0)).Concat(history), "mig", 101);
        Assert.Contains(states, s => s.Holders.Any(h => h.StartsWith(sourceLease, StringComparison.Ordinal)));
        Assert.Contains(states, s => s.Holders.Any(h => h.StartsWith(destinationLease, StringComparison.Ordinal)));
        Assert.All(states, s => Assert.True(s.Holders.Count(Daemon) <= 1, $"revision {s.Revision}: {string.Join(", ", s.Holders)}"));
        Assert.Contains("\"active\": false", source.Execute("{\"execute\":\"query-named-block-nodes\"}"));
    }
}
