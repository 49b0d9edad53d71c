using System.Globalization;
using Vdisk.Inspection;
using Vdisk.Interop.Support;
using Vdisk.Locking;
using Vdisk.Locking.Cluster;
using Vdisk.Permissions;
using Xunit;
using Xunit.Abstractions;

namespace Vdisk.Interop.Cluster;

/// <summary>
/// Sixteen racers on four hosts ask for the same image at the same instant, round after round.
/// Nothing here depends on timing: an admitted racer keeps the image until the test has heard
/// every racer's answer and counted the survivors, and only then lets it go.
/// The 500-round run (200 with mixed requests) uses racers inside the test process (each with its own etcd connection,
/// lease and host id, so each is a separate etcd client exactly as a process would be); a
/// cross-process run with LockProbe workers (local OFD locks included) does fewer rounds, as
/// sixteen processes per round would take minutes on the 2-core CI machine.
/// </summary>
[Collection("etcd")]
public class ClusterRaceTests(EtcdFixture etcd, ITestOutputHelper output)
{
    private static readonly PermissionPair WriteNotShared = new(BlockPermission.ConsistentRead | BlockPermission.Write, BlockPermission.All & ~BlockPermission.Write);

    /// <summary>Racers in this process: one session (lease) per racer, four racers per host.</summary>
    private sealed class Racers : IDisposable
    {
        private readonly List<ClusterSession> _sessions = new();
        public readonly List<PermissionLockTransaction> Transactions = new();

        public Racers(ClusterScope scope, int count, int hosts, string lockId)
        {
            for (int i = 0; i < count; i++)
            {
                var settings = scope.Settings with { HostId = "host" + (i % hosts).ToString(CultureInfo.InvariantCulture) };
                var session = ClusterSession.Start(settings, new EtcdStore(settings));
                _sessions.Add(session);
                var holder = new ClusterLockHolder(() => session, lockId, "/shared/lun0", "racer" + i.ToString(CultureInfo.InvariantCulture));
                Transactions.Add(new PermissionLockTransaction(new ClusterLockPrimitive(null, holder), "/shared/lun0"));
            }
        }

        /// <summary>
        /// One round: every racer asks for its request at once (released by one barrier); returns
        /// each answer (null: admitted) once all have answered. Admitted racers still hold.
        /// </summary>
        public string?[] Race(IReadOnlyList<PermissionPair> requests)
        {
            var answers = new string?[Transactions.Count];
            using var start = new Barrier(Transactions.Count);
            var threads = Enumerable.Range(0, Transactions.Count).Select(i => new Thread(() =>
            {
                start.SignalAndWait();
                try
                {
                    Transactions[i].Prepare(requests[i]);
                    Transactions[i].Commit(requests[i]);
                    answers[i] = null;
                }
                catch (LockConflictException e)
                {
                    answers[i] = e.Message;
                }
            })).ToList();
            foreach (var t in threads) t.Start();
            foreach (var t in threads) t.Join();
            return answers;
        }

        public void ReleaseAll()
        {
            foreach (var t in Transactions) t.ReleaseAll();
        }

        public void Dispose()
        {
            foreach (var s in _sessions) s.Dispose();
        }
    }

    [Fact]
    public void SixteenWritersOnFourHosts_FiveHundredRounds_NeverTwoAdmitted()
    {
        using var scope = new ClusterScope(etcd.Cluster.Endpoints, ttlSeconds: 10);
        using var racers = new Racers(scope, 16, 4, "race");
        var requests = Enumerable.Repeat(WriteNotShared, 16).ToList();
        int admitted = 0, refused = 0, empty = 0;
        var watch = System.Diagnostics.Stopwatch.StartNew();
        for (int round = 0; round < 500; round++)
        {
            var answers = racers.Race(requests);
            int survivors = answers.Count(a => a is null);
            Assert.True(survivors <= 1, $"round {round}: {survivors} racers admitted");
            Assert.All(answers.Where(a => a is not null), a => Assert.Contains(a, new[] { "Failed to get \"write\" lock", "Failed to get shared \"write\" lock" }));
            admitted += survivors;
            refused += answers.Length - survivors;
            if (survivors == 0) empty++;
            racers.ReleaseAll();
        }
        output.WriteLine($"500 rounds x 16 racers in-process: {admitted} admitted, {refused} refused, {empty} rounds with nobody admitted, {watch.Elapsed.TotalSeconds:0.0} s");
        // Each round is one etcd transaction per racer, serialised by etcd: the first always gets in.
        Assert.Equal(500, admitted);
        Assert.Empty(scope.AllKeys());
    }

    [Fact]
    public void MixedRequests_TwoHundredRounds_AdmitOnlyCompatibleRacers_WithTheLocalMessages()
    {
        using var scope = new ClusterScope(etcd.Cluster.Endpoints, ttlSeconds: 10);
        using var racers = new Racers(scope, 16, 4, "mixed");
        var kinds = ClusterLockTests.FileRequests().ToList();
        // Every racer keeps one request, the kinds spread over the hosts.
        var requests = Enumerable.Range(0, 16).Select(i => kinds[i % kinds.Count]).ToList();
        // The local lock matrix: what QEMU's transaction says to R when one holder has R'.
        string? Local(PermissionPair held, PermissionPair asked) =>
            LockVerdict.Evaluate([Holder(held)], asked) is { Admitted: false } v ? v.Error : null;
        // Fewer rounds than the writers' race (whose 500 the issue asks for): the verdicts are the
        // point here, and each round costs CI time.
        const int rounds = 200;
        int admitted = 0, refused = 0;
        for (int round = 0; round < rounds; round++)
        {
            var answers = racers.Race(requests);
            var winners = Enumerable.Range(0, 16).Where(i => answers[i] is null).ToList();
            // Any two survivors are compatible by the local matrix.
            foreach (int i in winners)
                foreach (int j in winners)
                    if (i != j) Assert.Null(Local(requests[i], requests[j]));
            // Every refusal is one the local matrix gives that request against another racer's.
            for (int i = 0; i < 16; i++)
            {
                if (answers[i] is not { } message) continue;
                int me = i;
                Assert.Contains(message, Enumerable.Range(0, 16).Where(j => j != me).Select(j => Local(requests[j], requests[me])).OfType<string>());
            }
            admitted += winners.Count;
            refused += 16 - winners.Count;
            racers.ReleaseAll();
        }
        output.WriteLine($"{rounds} rounds x 16 mixed racers in-process: {admitted} admitted, {refused} refused");
        Assert.InRange(admitted, rounds, rounds * 16 - 1);
        Assert.Empty(scope.AllKeys());
    }

    private static LockHolder Holder(PermissionPair p)
    {
        var bytes = BlockPermissions.Bits(p.Perm).Select(LockBytes.HoldByte).Concat(BlockPermissions.Bits(p.Unshared).Select(LockBytes.UnsharedByte)).Order().ToList();
        return new LockHolder(new ClusterHolding("x", new ClusterHolderRecord("h", "host", 1, "racer", 1, "/f", null, null, null), bytes, 1));
    }

    [Fact]
    public void SixteenLockProbeProcessesOnFourHosts_NeverTwoAdmitted()
    {
        const int rounds = 20;
        using var scope = new ClusterScope(etcd.Cluster.Endpoints, ttlSeconds: 10);
        using var dir = new TempDir();
        // Each host has its own path to the image; the four processes of a host share it (and its OFD locks).
        var files = Enumerable.Range(0, 4).Select(h => ClusterImages.Raw(dir, $"host{h}.raw")).ToList();
        var workers = new List<ProbeWorker>();
        try
        {
            for (int i = 0; i < 16; i++)
            {
                string host = "host" + (i % 4).ToString(CultureInfo.InvariantCulture);
                var env = scope.Env(host);
                // Sixteen processes starting their gRPC stacks at once on two cores can take longer
                // than the default 6 s to get their first lease: that is not what this test is about.
                env["VDISK_ETCD_TIMEOUT"] = "60";
                workers.Add(ProbeWorker.Start($"opts:driver=file,filename={files[i % 4]},cluster-lock-id=procrace", env));
            }
            int admitted = 0, empty = 0;
            var watch = System.Diagnostics.Stopwatch.StartNew();
            for (int round = 0; round < rounds; round++)
            {
                foreach (var w in workers) w.Send("go");
                var answers = workers.Select(w => w.NextLine()).ToList();
                int survivors = answers.Count(a => a == "admitted");
                Assert.True(survivors <= 1, $"round {round}: {string.Join(" | ", answers)}");
                Assert.All(answers.Where(a => a != "admitted"), a => Assert.StartsWith("refused Failed to get", a));
                admitted += survivors;
                if (survivors == 0) empty++;
                foreach (var w in workers) w.Send("release");
                Assert.All(workers.Select(w => w.NextLine()).ToList(), a => Assert.Equal("released", a));
            }
            output.WriteLine($"{rounds} rounds x 16 LockProbe processes: {admitted} admitted, {16 * rounds - admitted} refused, {empty} rounds with nobody admitted (two racers on one host can both fail, as two QEMUs can), {watch.Elapsed.TotalSeconds:0.0} s");
            // Rounds where every racer failed are allowed (lock-then-test), so liveness is shown
            // alone: one worker asking by itself is admitted, and then refuses the others.
            Assert.Equal("admitted", workers[0].Ask("go"));
            Assert.All(workers.Skip(1).Select(w => w.Ask("go")).ToList(), a => Assert.StartsWith("refused Failed to get", a));
        }
        finally
        {
            foreach (var w in workers) w.Dispose();
        }
    }
}
