using CsCheck;
using Microsoft.Extensions.Time.Testing;
using Vdisk.Locking;
using Vdisk.Locking.Cluster;
using Vdisk.Permissions;
using Xunit;
using P = Vdisk.Permissions.BlockPermission;

namespace Vdisk.Tests.Locking.Cluster;

/// <summary>
/// QEMU's lock transaction carried out on cluster keys (against an in-memory etcd model): the
/// same verdicts and messages as on local lock bytes, one round trip per step, the holder named,
/// self-fencing on the clock, and the identity check of a lock id.
/// </summary>
public class ClusterLockTests
{
    private static ClusterLockSettings Settings(string host = "A") =>
        new() { Endpoints = [new Uri("http://memory:2379")], TtlSeconds = 10, HostId = host, FenceMargin = TimeSpan.FromSeconds(2) };

    /// <summary>One simulated host: its own session (lease) on the shared store.</summary>
    private sealed class Host(MemoryClusterStore store, string name, TimeProvider? clock = null) : IDisposable
    {
        public readonly ClusterSession Session = ClusterSession.Start(Settings(name), store, clock);

        public ClusterLockHolder Holder(string id = "vm42", string file = "/img", string? fileId = "fe:0:12", string? deviceId = null) =>
            new(() => Session, id, file, "node0", fileId, deviceId);

        public static PermissionLockTransaction Transaction(ClusterLockHolder holder) =>
            new(new ClusterLockPrimitive(null, holder), "/img");

        public void Dispose() => Session.Dispose();
    }

    private static readonly Gen<PermissionPair> GenPair =
        Gen.Select(Gen.Int[0, 15], Gen.Int[0, 15], (p, s) => new PermissionPair((P)p, (P)s));

    private static int[] ExpectedBytes(PermissionPair p)
    {
        var bytes = new List<int>();
        foreach (var bit in BlockPermissions.Bits(p.Perm)) bytes.Add(LockBytes.HoldByte(bit));
        foreach (var bit in BlockPermissions.Bits(p.Unshared)) bytes.Add(LockBytes.UnsharedByte(bit));
        return bytes.Order().ToArray();
    }

    private static string Outcome(PermissionLockTransaction tx, PermissionPair request)
    {
        try
        {
            tx.Prepare(request);
            tx.Commit(request);
            return "admitted";
        }
        catch (LockConflictException e)
        {
            return e.Message;
        }
    }

    [Fact]
    public void RandomRequestSequences_GiveTheLocalVerdictsAndMessages()
    {
        // Three holders on three hosts against the same sequence on one host's OFD model: every
        // step is admitted or refused alike, with QEMU's message, and the keys in etcd are exactly
        // the bytes each committed request locks.
        Gen.Select(Gen.Int[0, 2], GenPair).Array[1, 25].Sample(steps =>
        {
            var store = new MemoryClusterStore();
            var hosts = new[] { "A", "B", "C" }.Select(n => new Host(store, n)).ToArray();
            try
            {
                var holders = hosts.Select(h => h.Holder()).ToArray();
                var cluster = holders.Select(Host.Transaction).ToArray();
                var file = new SimulatedFile();
                var local = Enumerable.Range(0, 3).Select(_ => new PermissionLockTransaction(file.NewOwner(), "/img")).ToArray();
                foreach (var (who, request) in steps)
                {
                    Assert.Equal(Outcome(local[who], request), Outcome(cluster[who], request));
                    for (int i = 0; i < 3; i++)
                        Assert.Equal(ExpectedBytes(cluster[i].Committed), holders[i].StoredBytes.Order().ToArray());
                }
                var keys = store.Keys("vdisk/v1/locks/vm42/").Select(e => ClusterKeys.Parse("vdisk/v1/", e.Key)!.Value).ToList();
                for (int i = 0; i < 3; i++)
                    Assert.Equal(ExpectedBytes(cluster[i].Committed), keys.Where(k => k.Holder == holders[i].Record.Holder).Select(k => k.Offset).Order().ToArray());
            }
            finally
            {
                foreach (var h in hosts) h.Dispose();
            }
        }, iter: 300);
    }

    [Fact]
    public void Prepare_IsOneRoundTrip_AndCommitOfTheSameBytesNone()
    {
        var store = new MemoryClusterStore();
        using var a = new Host(store, "A");
        var tx = Host.Transaction(a.Holder());
        var write = new PermissionPair(P.ConsistentRead | P.Write, P.ConsistentRead | P.WriteUnchanged);
        int before = store.Commits;
        tx.Prepare(write);
        Assert.Equal(1, store.Commits - before);
        tx.Commit(write);
        Assert.Equal(1, store.Commits - before);
        tx.ReleaseAll();
        Assert.Equal(2, store.Commits - before);
        Assert.Empty(store.Keys("vdisk/v1/"));
    }

    [Fact]
    public void Conflict_NamesTheHolder_AndARefusedPrepareLeavesNoKeys()
    {
        var store = new MemoryClusterStore();
        using var a = new Host(store, "A");
        using var b = new Host(store, "B");
        var holderA = a.Holder();
        var txA = Host.Transaction(holderA);
        var exclusive = new PermissionPair(P.ConsistentRead | P.Write, P.ConsistentRead | P.WriteUnchanged);
        txA.Prepare(exclusive);
        txA.Commit(exclusive);

        var holderB = b.Holder(file: "/other-path-of-the-same-lun");
        var e = Assert.Throws<LockConflictException>(() => Host.Transaction(holderB).Prepare(exclusive));
        Assert.Equal("Failed to get \"write\" lock", e.Message);
        Assert.Equal($"held by host A, pid {Environment.ProcessId} ({ClusterLocks.Command})", e.HeldBy);
        Assert.Equal("Is another process using the image [/img]?\nheld by " + e.Detail!.Holders[0].Describe(), e.HintWithHolder);
        Assert.NotNull(e.Detail.WaitForChange);
        Assert.Empty(holderB.StoredBytes);
        Assert.All(store.Keys("vdisk/v1/"), k => Assert.EndsWith("/" + holderA.Record.Holder, k.Key));
    }

    [Fact]
    public async Task WaitForChange_EndsWhenTheHolderLeaves_NotOnTheWaitersOwnKeys()
    {
        var store = new MemoryClusterStore();
        using var a = new Host(store, "A");
        using var b = new Host(store, "B");
        var txA = Host.Transaction(a.Holder());
        var exclusive = new PermissionPair(P.ConsistentRead | P.Write, P.ConsistentRead | P.WriteUnchanged);
        txA.Prepare(exclusive);
        txA.Commit(exclusive);
        var holderB = b.Holder();
        var e = Assert.Throws<LockConflictException>(() => Host.Transaction(holderB).Prepare(exclusive));
        var wait = e.Detail!.WaitForChange!(CancellationToken.None);
        // The waiter taking a byte of its own does not end the wait...
        var txB = Host.Transaction(holderB);
        txB.Reserve(P.Resize);
        Assert.False(wait.IsCompleted);
        // ...the holder letting go does.
        txA.ReleaseAll();
        await wait.WaitAsync(TimeSpan.FromSeconds(30));
        txB.ReleaseReservation(active: true);
        txB.Prepare(exclusive);
        txB.Commit(exclusive);
        Assert.Equal(ExpectedBytes(exclusive), holderB.StoredBytes.Order().ToArray());
    }

    [Fact]
    public void OneIdForTwoFilesOnOneHost_IsRefusedWithOneLine_OtherHostsAndSameFileAreNot()
    {
        var store = new MemoryClusterStore();
        using var a = new Host(store, "A");
        using var b = new Host(store, "B");
        var shared = new PermissionPair(P.ConsistentRead, P.All);
        var first = Host.Transaction(a.Holder(file: "/a.img", fileId: "fe:0:12"));
        first.Prepare(shared);
        first.Commit(shared);
        // Same file again on this host, and any file on another host: fine.
        Host.Transaction(a.Holder(file: "/link-to-a.img", fileId: "fe:0:12")).Prepare(shared);
        Host.Transaction(b.Holder(file: "/mnt/a.img", fileId: "8:1:99")).Prepare(shared);
        // Another file on this host under the same id: a misconfiguration, named.
        var other = a.Holder(file: "/b.img", fileId: "fe:0:13");
        var e = Assert.Throws<ClusterLockException>(() => Host.Transaction(other).Prepare(shared));
        Assert.Equal($"cluster-lock-id 'vm42' already names another image: host A, pid {Environment.ProcessId} ({ClusterLocks.Command}) holds it for '/a.img' (fe:0:12), this open is for '/b.img' (fe:0:13)", e.Message);
        Assert.DoesNotContain('\n', e.Message);
        Assert.Empty(other.StoredBytes);
        // Two block devices with different WWIDs under one id, on any hosts.
        var lun1 = Host.Transaction(a.Holder(id: "lun", file: "/dev/sdb", fileId: "0:5:100", deviceId: "wwid:naa.1"));
        lun1.Prepare(shared);
        lun1.Commit(shared);
        var lun2 = b.Holder(id: "lun", file: "/dev/sdc", fileId: "0:5:200", deviceId: "wwid:naa.2");
        Assert.Throws<ClusterLockException>(() => Host.Transaction(lun2).Prepare(shared));
    }

    [Fact]
    public void StoreDownDuringPrepare_FailsClearly_AndKeysInDoubtAreDeletedLater()
    {
        var store = new MemoryClusterStore();
        using var a = new Host(store, "A");
        var holder = a.Holder();
        var tx = Host.Transaction(holder);
        store.Down = true;
        var request = new PermissionPair(P.ConsistentRead | P.Write, P.All);
        var e = Assert.Throws<ClusterUnavailableException>(() => tx.Prepare(request));
        Assert.Contains("http://memory:2379", e.Message);
        Assert.Equal(PermissionPair.Unused, tx.Committed);
        Assert.Equal(P.None, tx.LockedPerm);
        store.Down = false;
        tx.Prepare(request);
        tx.Commit(request);
        holder.Release();
        Assert.Empty(store.Keys("vdisk/v1/"));
    }

    [Fact]
    public async Task Fencing_FollowsTheClock_FromTheLastConfirmedSend()
    {
        var clock = new FakeTimeProvider();
        var store = new MemoryClusterStore { KeepAliveAnswer = (_, token) => Task.Delay(Timeout.Infinite, token).ContinueWith(_ => 0L, TaskScheduler.Default) };
        using var a = new Host(store, "A", clock);
        int fenced = 0;
        a.Session.Fenced += _ => Interlocked.Increment(ref fenced);
        // TTL 10 s, margin 2 s: the lease granted at t=0 is certainly alive until t=10 s; writes stop at 8 s.
        clock.Advance(TimeSpan.FromSeconds(8) - TimeSpan.FromTicks(1));
        Assert.False(a.Session.IsFenced);
        clock.Advance(TimeSpan.FromTicks(1));
        Assert.True(a.Session.IsFenced);
        await Until(() => Volatile.Read(ref fenced) == 1);
        Assert.True(a.Session.IsFenced);
        Assert.Equal(1, Volatile.Read(ref fenced));
        Assert.StartsWith($"cluster lease {a.Session.LeaseHex} was lost (no keep-alive confirmed within 8 s", a.Session.FencedMessage);
        var holder = a.Holder();
        holder.Lock(101);
        Assert.Throws<ClusterFencedException>(holder.Flush);
    }

    [Fact]
    public async Task Fence_IsReportedByItself_WhenTheLastRenewalFailsInAnyWay()
    {
        // A daemon that writes nothing must still learn of its fence (to inactivate its nodes
        // and emit the event): the keep-alive task reports it, whatever the stuck renewal throws
        // when the deadline cancels it.
        var clock = new FakeTimeProvider();
        var renewing = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var store = new MemoryClusterStore
        {
            KeepAliveAnswer = (_, token) =>
            {
                renewing.TrySetResult();
                return Task.Delay(Timeout.Infinite, token).ContinueWith<long>(
                    _ => throw new Grpc.Core.RpcException(new Grpc.Core.Status(Grpc.Core.StatusCode.Cancelled, "Call canceled by the client.")), TaskScheduler.Default);
            },
        };
        using var a = new Host(store, "A", clock);
        int fenced = 0;
        a.Session.Fenced += _ => Interlocked.Increment(ref fenced);
        await renewing.Task.WaitAsync(TimeSpan.FromSeconds(30));
        clock.Advance(TimeSpan.FromSeconds(8));
        await Until(() => Volatile.Read(ref fenced) == 1);
    }

    [Fact]
    public async Task ConfirmedKeepAlive_KeepsTheHolderUnfenced_ALeaseReportedGoneFencesAtOnce_AndNeverResumes()
    {
        var clock = new FakeTimeProvider();
        int renewals = 0;
        long answer = 10;
        var store = new MemoryClusterStore();
        store.KeepAliveAnswer = (_, _) =>
        {
            Interlocked.Increment(ref renewals);
            return Task.FromResult(Volatile.Read(ref answer));
        };
        using var a = new Host(store, "A", clock);
        var interval = a.Session.Settings.KeepAliveInterval;
        for (int i = 1; i <= 12; i++)
        {
            clock.Advance(interval);
            await Until(() => Volatile.Read(ref renewals) >= i);
            Assert.False(a.Session.IsFenced);
        }
        // Twelve intervals are 18 s: well past one TTL, kept alive all along.
        Assert.True(interval * 12 > a.Session.Settings.Ttl);
        Volatile.Write(ref answer, 0);
        clock.Advance(interval);
        await Until(() => a.Session.FenceReason is not null);
        Assert.Equal("etcd reports the lease expired", a.Session.FenceReason);
        Volatile.Write(ref answer, 10);
        clock.Advance(interval * 4);
        Assert.True(a.Session.IsFenced);
    }

    [Fact]
    public void AfterAFence_ReleasingEverythingThenAcquiringAgainUsesANewLease()
    {
        var clock = new FakeTimeProvider();
        var store = new MemoryClusterStore
        {
            KeepAliveAnswer = (_, token) => Task.Delay(Timeout.Infinite, token).ContinueWith(_ => 0L, TaskScheduler.Default),
            RevokeUnreachable = true,
        };
        var sessions = new List<ClusterSession> { ClusterSession.Start(Settings(), store, clock) };
        var holder = new ClusterLockHolder(() =>
        {
            if (sessions[^1].IsFenced) sessions.Add(ClusterSession.Start(Settings(), store, clock));
            return sessions[^1];
        }, "vm42", "/img", "node0", "fe:0:12");
        var tx = Host.Transaction(holder);
        var write = new PermissionPair(P.ConsistentRead | P.Write, P.ConsistentRead | P.WriteUnchanged);
        tx.Prepare(write);
        tx.Commit(write);
        string oldToken = holder.FencingToken;
        clock.Advance(TimeSpan.FromSeconds(9));
        Assert.True(holder.IsFenced);
        // Still holding the old bytes: no silent renewal.
        Assert.Throws<ClusterFencedException>(() => tx.Prepare(write with { Perm = write.Perm | P.Resize }));
        tx.ReleaseAll();
        // Until etcd lets the old lease go, its keys still refuse the new acquisition.
        var refused = Assert.Throws<LockConflictException>(() => tx.Prepare(write));
        Assert.Equal($"held by host A, pid {Environment.ProcessId} ({ClusterLocks.Command})", refused.HeldBy);
        store.Expire(sessions[0].LeaseId);
        tx.Prepare(write);
        tx.Commit(write);
        Assert.False(holder.IsFenced);
        Assert.NotEqual(oldToken.Split('@')[0], holder.FencingToken.Split('@')[0]);
        Assert.Equal(2, sessions.Count);
        foreach (var s in sessions) s.Dispose();
    }

    private static async Task Until(Func<bool> condition)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (!condition())
        {
            if (DateTime.UtcNow > deadline) throw new TimeoutException("condition not reached");
            await Task.Delay(5);
        }
    }
}
