namespace Vdisk.Drivers.Throttle;

/// <summary>
/// The running state of a throttle configuration (util/throttle.c's ThrottleState): the buckets
/// leak at their rates as time passes, each request fills them, and a request must wait while
/// a bucket it counts against is over its size. Times are nanoseconds on the group's clock;
/// the caller passes them in, so the arithmetic is QEMU's and testable without a clock.
/// </summary>
public sealed class ThrottleState
{
    private const double NanosecondsPerSecond = 1e9;

    private static readonly ThrottleBucket[][] s_checkedBuckets =
    [
        [ThrottleBucket.BpsTotal, ThrottleBucket.OpsTotal, ThrottleBucket.BpsRead, ThrottleBucket.OpsRead],
        [ThrottleBucket.BpsTotal, ThrottleBucket.OpsTotal, ThrottleBucket.BpsWrite, ThrottleBucket.OpsWrite],
    ];

    private long _previousLeakNs;

    /// <summary>The configuration with its current levels.</summary>
    public ThrottleConfig Config { get; private set; } = new();

    /// <summary>throttle_config: takes <paramref name="config"/> with empty buckets, as of <paramref name="nowNs"/>.</summary>
    public void Configure(ThrottleConfig config, long nowNs)
    {
        Config = config.Clone();
        for (int i = 0; i < Config.Buckets.Length; i++)
        {
            Config.Buckets[i].Level = 0;
            Config.Buckets[i].BurstLevel = 0;
        }
        _previousLeakNs = nowNs;
    }

    /// <summary>throttle_leak_bucket: what <paramref name="deltaNs"/> nanoseconds drain from a bucket.</summary>
    public static void Leak(ref LeakyBucket bucket, long deltaNs)
    {
        double leak = bucket.Avg * (double)deltaNs / NanosecondsPerSecond;
        bucket.Level = Math.Max(bucket.Level - leak, 0);
        // With bursts over a second, the burst level keeps the burst rate itself.
        if (bucket.BurstLength > 1)
        {
            leak = bucket.Max * (double)deltaNs / NanosecondsPerSecond;
            bucket.BurstLevel = Math.Max(bucket.BurstLevel - leak, 0);
        }
    }

    /// <summary>
    /// throttle_compute_wait: nanoseconds until a request may pass this bucket, 0 when it may
    /// now. Without a burst rate a tenth of a second's worth passes at once, so single requests
    /// are not each delayed.
    /// </summary>
    public static long ComputeWait(in LeakyBucket bucket)
    {
        if (bucket.Avg == 0) return 0;
        double bucketSize, burstBucketSize;
        if (bucket.Max == 0)
        {
            bucketSize = bucket.Avg / 10.0;
            burstBucketSize = 0;
        }
        else
        {
            bucketSize = (double)bucket.Max * bucket.BurstLength;
            burstBucketSize = bucket.Max / 10.0;
        }
        double extra = bucket.Level - bucketSize;
        if (extra > 0) return WaitFor(bucket.Avg, extra);
        if (bucket.BurstLength > 1)
        {
            extra = bucket.BurstLevel - burstBucketSize;
            if (extra > 0) return WaitFor(bucket.Max, extra);
        }
        return 0;
    }

    /// <summary>throttle_do_compute_wait: the time <paramref name="extra"/> units take to leak at <paramref name="rate"/>, truncated like C's double to int64.</summary>
    private static long WaitFor(double rate, double extra) => (long)(extra * NanosecondsPerSecond / rate);

    /// <summary>
    /// throttle_compute_timer: leaks what the time since the last leak drained, then returns the
    /// nanoseconds a read or write must wait (the longest of its buckets'), 0 when none.
    /// </summary>
    public long ComputeWait(bool isWrite, long nowNs)
    {
        long delta = nowNs - _previousLeakNs;
        _previousLeakNs = nowNs;
        if (delta > 0)
        {
            for (int i = 0; i < Config.Buckets.Length; i++) Leak(ref Config.Buckets[i], delta);
        }
        long maxWait = 0;
        foreach (var type in s_checkedBuckets[isWrite ? 1 : 0]) maxWait = Math.Max(maxWait, ComputeWait(Config[type]));
        return maxWait;
    }

    /// <summary>throttle_account: a request of <paramref name="bytes"/> passes, filling its byte and operation buckets.</summary>
    public void Account(bool isWrite, ulong bytes)
    {
        double units = 1.0;
        if (Config.OpSize != 0 && bytes > Config.OpSize) units = (double)bytes / Config.OpSize;
        var (bps, ops) = isWrite ? (ThrottleBucket.BpsWrite, ThrottleBucket.OpsWrite) : (ThrottleBucket.BpsRead, ThrottleBucket.OpsRead);
        Fill(ref Config[ThrottleBucket.BpsTotal], bytes);
        Fill(ref Config[bps], bytes);
        Fill(ref Config[ThrottleBucket.OpsTotal], units);
        Fill(ref Config[ops], units);

        static void Fill(ref LeakyBucket bucket, double amount)
        {
            bucket.Level += amount;
            if (bucket.BurstLength > 1) bucket.BurstLevel += amount;
        }
    }
}
