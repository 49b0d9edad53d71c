using Microsoft.Extensions.Time.Testing;
using Vdisk.Drivers.Throttle;
using Vdisk.Options;
using Xunit;

namespace Vdisk.Tests.Drivers;

/// <summary>
/// The throttle filter's pure parts: the throttle-group properties and their validation (the
/// messages qemu-io 7.2 prints, checked against it), util/throttle.c's leaky-bucket arithmetic,
/// and the group's queueing on a fake clock (requests go in order, when the buckets allow).
/// </summary>
public class ThrottleTests
{
    /// <summary>Turns a request that is never let go (a scheduling bug) into a failure instead of a hung run; no timing is measured.</summary>
    private const int HangGuardMilliseconds = 60_000;

    private static ThrottleConfig Parse(string properties) =>
        ThrottleGroups.ParseProperties(KeyValParser.Parse("throttle-group,id=g0," + properties, impliedKey: "qom-type"));

    [Theory]
    [InlineData("x-iops-total=10,x-iops-read=5", "bps/iops/max total values and read/write values cannot be used at the same time")]
    [InlineData("limits.iops-total=10,limits.iops-read=5", "bps/iops/max total values and read/write values cannot be used at the same time")]
    [InlineData("limits.bps-total=10,limits.bps-write=5", "bps/iops/max total values and read/write values cannot be used at the same time")]
    [InlineData("limits.bps-total=10,limits.bps-total-max=20,limits.bps-read=1,limits.bps-read-max=5", "bps/iops/max total values and read/write values cannot be used at the same time")]
    [InlineData("x-iops-total=-1", "Property values cannot be negative")]
    [InlineData("x-iops-total=abc", "Parameter 'x-iops-total' expects integer")]
    [InlineData("limits.iops-total=abc", "Parameter 'limits.iops-total' expects integer")]
    [InlineData("x-iops-total-max-length=5000000000", "x-iops-total-max-length value must be in therange [0, 4294967295]")]
    [InlineData("limits.iops-total-max-length=5000000000", "iops-total-max-length value must be in the range [0, 4294967295]")]
    [InlineData("bogus=1", "Parameter 'bogus' is unexpected")]
    [InlineData("x-bogus=1", "Parameter 'x-bogus' is unexpected")]
    [InlineData("limits.bogus=1", "Parameter 'limits.bogus' is unexpected")]
    [InlineData("x-iops-size=4096", "iops size requires an iops value to be set")]
    [InlineData("x-bps-total=1000000000000001", "bps/iops/max values must be within [0, 1000000000000000]")]
    [InlineData("limits.bps-total=-1", "bps/iops/max values must be within [0, 1000000000000000]")]
    [InlineData("x-bps-total-max-length=0", "the burst length cannot be 0")]
    [InlineData("x-bps-total=10,x-bps-total-max-length=2", "burst length set without burst rate")]
    [InlineData("x-bps-total=10,x-bps-total-max=1000000000000000,x-bps-total-max-length=2", "burst length too high for this burst rate")]
    [InlineData("x-bps-total-max=10", "bps_max/iops_max require corresponding bps/iops values")]
    [InlineData("x-bps-total=10,x-bps-total-max=5", "bps_max/iops_max cannot be lower than bps/iops")]
    [InlineData("limits.iops-write-max-length=-1", "burst length set without burst rate")]
    public void BadProperties_FailWithQemusMessage(string properties, string message)
    {
        var e = Assert.Throws<OptionException>(() => Parse(properties));
        Assert.Equal(message, e.Message);
    }

    [Fact]
    public void Properties_SetTheirBuckets_LimitsAndLegacyKeysAlike()
    {
        var config = Parse("limits.iops-total=1000,limits.iops-total-max=2000,limits.iops-total-max-length=3,x-bps-read=0x100,x-bps-write=512,x-iops-size=4096");
        Assert.Equal(1000UL, config[ThrottleBucket.OpsTotal].Avg);
        Assert.Equal(2000UL, config[ThrottleBucket.OpsTotal].Max);
        Assert.Equal(3U, config[ThrottleBucket.OpsTotal].BurstLength);
        Assert.Equal(256UL, config[ThrottleBucket.BpsRead].Avg);
        Assert.Equal(512UL, config[ThrottleBucket.BpsWrite].Avg);
        Assert.Equal(4096UL, config.OpSize);
        Assert.Equal(1U, config[ThrottleBucket.BpsWrite].BurstLength);
        Assert.True(config.IsEnabled);
    }

    [Fact]
    public void Limits_ListEveryKeyInQapiOrder()
    {
        var limits = ThrottleGroups.ToLimits(Parse("limits.iops-total=1000"));
        Assert.Equal(19, limits.Count);
        Assert.Equal(new KeyValuePair<string, long>("iops-total", 1000), limits[0]);
        Assert.Equal(new KeyValuePair<string, long>("iops-total-max-length", 1), limits[2]);
        Assert.Equal("iops-size", limits[^1].Key);
        Assert.False(Parse("").IsEnabled);
    }

    [Fact]
    public void Bucket_WithoutBurstRate_LetsATenthOfASecondThrough_ThenWaitsForTheExcessToLeak()
    {
        var bucket = new LeakyBucket { Avg = 100, BurstLength = 1, Level = 10 };
        Assert.Equal(0, ThrottleState.ComputeWait(bucket));
        bucket.Level = 15;
        // 5 units over the bucket's 10, leaking at 100 a second: 50 ms.
        Assert.Equal(50_000_000, ThrottleState.ComputeWait(bucket));
        ThrottleState.Leak(ref bucket, 20_000_000);
        Assert.Equal(13, bucket.Level, 9);
        ThrottleState.Leak(ref bucket, 10_000_000_000);
        Assert.Equal(0, bucket.Level);
    }

    [Fact]
    public void Bucket_WithBursts_AllowsMaxForBurstLengthSeconds_AndLimitsTheBurstRate()
    {
        var bucket = new LeakyBucket { Avg = 10, Max = 100, BurstLength = 2, Level = 150, BurstLevel = 10 };
        // The main bucket holds max * length = 200 units; the burst bucket a tenth of max.
        Assert.Equal(0, ThrottleState.ComputeWait(bucket));
        bucket.BurstLevel = 12;
        Assert.Equal(20_000_000, ThrottleState.ComputeWait(bucket));
        bucket.Level = 201;
        Assert.Equal(100_000_000, ThrottleState.ComputeWait(bucket));
        ThrottleState.Leak(ref bucket, 100_000_000);
        Assert.Equal(200, bucket.Level, 9);
        Assert.Equal(2, bucket.BurstLevel, 9);
    }

    [Fact]
    public void State_AccountsBytesAndOperations_IopsSizeSplittingLargeRequests()
    {
        var state = new ThrottleState();
        state.Configure(Parse("x-iops-write=10,x-bps-total=1000,x-iops-size=4096"), 0);
        state.Account(isWrite: true, 16384);
        Assert.Equal(16384, state.Config[ThrottleBucket.BpsTotal].Level);
        Assert.Equal(16384, state.Config[ThrottleBucket.BpsWrite].Level);
        Assert.Equal(0, state.Config[ThrottleBucket.BpsRead].Level);
        Assert.Equal(4, state.Config[ThrottleBucket.OpsWrite].Level);
        Assert.Equal(4, state.Config[ThrottleBucket.OpsTotal].Level);
        // A write waits for both its buckets; bps-total's 16384 - 100 at 1000/s is the longer.
        Assert.Equal(16_284_000_000, state.ComputeWait(isWrite: true, 0));
        // One second later both have leaked their rate's worth.
        Assert.Equal(15_284_000_000, state.ComputeWait(isWrite: true, 1_000_000_000));
        state.Account(isWrite: false, 100);
        Assert.Equal(1, state.Config[ThrottleBucket.OpsRead].Level);
    }

    [Fact]
    public void State_WithoutLimits_NeverWaits()
    {
        var state = new ThrottleState();
        state.Configure(new ThrottleConfig(), 0);
        for (int i = 0; i < 100; i++) state.Account(isWrite: i % 2 == 0, 1 << 20);
        Assert.Equal(0, state.ComputeWait(isWrite: false, 0));
        Assert.Equal(0, state.ComputeWait(isWrite: true, 0));
    }

    [Fact(Timeout = HangGuardMilliseconds)]
    public async Task Group_LetsRequestsGoInOrder_AsTheBucketLeaks()
    {
        var clock = new FakeTimeProvider();
        // 10 operations a second: a bucket of one operation passes at once, then one each 100 ms.
        var group = new ThrottleGroup("g0", Parse("x-iops-total=10"), clock);
        using var member = group.Register();
        await member.InterceptAsync(512, isWrite: false);
        await member.InterceptAsync(512, isWrite: true);
        var third = member.InterceptAsync(512, isWrite: false).AsTask();
        var fourth = member.InterceptAsync(512, isWrite: false).AsTask();
        Assert.False(third.IsCompleted);

        clock.Advance(TimeSpan.FromMilliseconds(100) - TimeSpan.FromTicks(1));
        Assert.False(third.IsCompleted);
        clock.Advance(TimeSpan.FromTicks(1));
        await third;
        Assert.False(fourth.IsCompleted);
        clock.Advance(TimeSpan.FromMilliseconds(100));
        await fourth;
    }

    [Fact(Timeout = HangGuardMilliseconds)]
    public async Task Group_ReadsAndWritesQueueApart()
    {
        var clock = new FakeTimeProvider();
        var group = new ThrottleGroup("g0", Parse("x-iops-read=10"), clock);
        using var member = group.Register();
        await member.InterceptAsync(512, isWrite: false);
        await member.InterceptAsync(512, isWrite: false);
        var read = member.InterceptAsync(512, isWrite: false).AsTask();
        // Writes have no limit here, and do not queue behind the waiting read.
        await member.InterceptAsync(512, isWrite: true);
        Assert.False(read.IsCompleted);
        clock.Advance(TimeSpan.FromMilliseconds(100));
        await read;
    }

    [Fact(Timeout = HangGuardMilliseconds)]
    public async Task Group_TakesTurnsBetweenMembersWithWaitingRequests()
    {
        var clock = new FakeTimeProvider();
        var group = new ThrottleGroup("g0", Parse("x-iops-total=10"), clock);
        using var first = group.Register();
        using var second = group.Register();
        await first.InterceptAsync(512, isWrite: false);
        await first.InterceptAsync(512, isWrite: false);
        var firstA = first.InterceptAsync(512, isWrite: false).AsTask();
        var firstB = first.InterceptAsync(512, isWrite: false).AsTask();
        var secondA = second.InterceptAsync(512, isWrite: false).AsTask();

        clock.Advance(TimeSpan.FromMilliseconds(100));
        await firstA;
        Assert.False(firstB.IsCompleted);
        Assert.False(secondA.IsCompleted);
        // The next turn is the other member's, although the first queued earlier.
        clock.Advance(TimeSpan.FromMilliseconds(100));
        await secondA;
        Assert.False(firstB.IsCompleted);
        clock.Advance(TimeSpan.FromMilliseconds(100));
        await firstB;
    }

    [Fact(Timeout = HangGuardMilliseconds)]
    public async Task Group_CancelledWaiter_LeavesTheQueue_AndTheNextStillGoes()
    {
        var clock = new FakeTimeProvider();
        var group = new ThrottleGroup("g0", Parse("x-iops-total=10"), clock);
        using var member = group.Register();
        await member.InterceptAsync(512, isWrite: false);
        await member.InterceptAsync(512, isWrite: false);
        using var cancel = new CancellationTokenSource();
        var cancelled = member.InterceptAsync(512, isWrite: false, cancel.Token).AsTask();
        var next = member.InterceptAsync(512, isWrite: false).AsTask();
        cancel.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => cancelled);
        Assert.False(next.IsCompleted);
        clock.Advance(TimeSpan.FromMilliseconds(100));
        await next;
    }

    [Fact(Timeout = HangGuardMilliseconds)]
    public async Task Group_MemberLeaving_LetsItsWaitingRequestsGo()
    {
        var clock = new FakeTimeProvider();
        var group = new ThrottleGroup("g0", Parse("x-iops-total=10"), clock);
        var member = group.Register();
        await member.InterceptAsync(512, isWrite: true);
        await member.InterceptAsync(512, isWrite: true);
        var waiting = member.InterceptAsync(512, isWrite: true).AsTask();
        Assert.False(waiting.IsCompleted);
        member.Dispose();
        await waiting;
        Assert.Equal(0, group.MemberCount);
    }
}
