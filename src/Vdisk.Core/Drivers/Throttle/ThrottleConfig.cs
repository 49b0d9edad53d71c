using Vdisk.Options;

namespace Vdisk.Drivers.Throttle;

/// <summary>The six leaky buckets of a throttle configuration (util/throttle.c's BucketType), in QEMU's order.</summary>
public enum ThrottleBucket
{
    /// <summary>Bytes per second, reads and writes together.</summary>
    BpsTotal,
    /// <summary>Bytes per second read.</summary>
    BpsRead,
    /// <summary>Bytes per second written.</summary>
    BpsWrite,
    /// <summary>Operations per second, reads and writes together.</summary>
    OpsTotal,
    /// <summary>Read operations per second.</summary>
    OpsRead,
    /// <summary>Write operations per second.</summary>
    OpsWrite,
}

/// <summary>
/// One leaky bucket (util/throttle.c's LeakyBucket): the configured rate, burst rate and burst
/// length, and the fill levels the running state keeps.
/// </summary>
public struct LeakyBucket
{
    /// <summary>The average rate (units per second); 0: no limit.</summary>
    public ulong Avg;

    /// <summary>The burst rate (units per second); 0: bursts of a tenth of <see cref="Avg"/>.</summary>
    public ulong Max;

    /// <summary>How many seconds a burst at <see cref="Max"/> may last (at least 1).</summary>
    public uint BurstLength;

    /// <summary>Units accounted and not yet leaked.</summary>
    public double Level;

    /// <summary>Units accounted against the burst rate when <see cref="BurstLength"/> is over 1.</summary>
    public double BurstLevel;
}

/// <summary>
/// A throttle configuration (ThrottleConfig): six buckets and the operation size, with QEMU's
/// validation (throttle_is_valid) and the mapping to and from ThrottleLimits' keys.
/// </summary>
public sealed class ThrottleConfig
{
    /// <summary>THROTTLE_VALUE_MAX: the highest rate or burst rate QEMU accepts.</summary>
    public const ulong ValueMax = 1_000_000_000_000_000UL;

    /// <summary>The buckets, indexed by <see cref="ThrottleBucket"/>.</summary>
    public LeakyBucket[] Buckets { get; } = new LeakyBucket[6];

    /// <summary>iops-size: a request larger than this counts as size/OpSize operations; 0: every request is one.</summary>
    public ulong OpSize { get; set; }

    /// <summary>throttle_config_init: no limits, burst lengths of 1.</summary>
    public ThrottleConfig()
    {
        for (int i = 0; i < Buckets.Length; i++) Buckets[i].BurstLength = 1;
    }

    /// <summary>A copy (the levels included).</summary>
    public ThrottleConfig Clone()
    {
        var copy = new ThrottleConfig { OpSize = OpSize };
        Buckets.CopyTo(copy.Buckets, 0);
        return copy;
    }

    /// <summary>The bucket of <paramref name="type"/>.</summary>
    public ref LeakyBucket this[ThrottleBucket type] => ref Buckets[(int)type];

    /// <summary>throttle_enabled: whether any bucket has a rate.</summary>
    public bool IsEnabled => Buckets.Any(b => b.Avg > 0);

    /// <summary>throttle_is_valid: QEMU's checks, in its order, with its messages.</summary>
    /// <exception cref="OptionException">The first check that fails.</exception>
    public void Validate()
    {
        bool Conflict(Func<LeakyBucket, ulong> value, ThrottleBucket total, ThrottleBucket read, ThrottleBucket write) =>
            value(this[total]) != 0 && (value(this[read]) != 0 || value(this[write]) != 0);

        if (Conflict(b => b.Avg, ThrottleBucket.BpsTotal, ThrottleBucket.BpsRead, ThrottleBucket.BpsWrite)
            || Conflict(b => b.Avg, ThrottleBucket.OpsTotal, ThrottleBucket.OpsRead, ThrottleBucket.OpsWrite)
            || Conflict(b => b.Max, ThrottleBucket.BpsTotal, ThrottleBucket.BpsRead, ThrottleBucket.BpsWrite)
            || Conflict(b => b.Max, ThrottleBucket.OpsTotal, ThrottleBucket.OpsRead, ThrottleBucket.OpsWrite))
            throw new OptionException("bps/iops/max total values and read/write values cannot be used at the same time");

        if (OpSize != 0 && this[ThrottleBucket.OpsTotal].Avg == 0 && this[ThrottleBucket.OpsRead].Avg == 0 && this[ThrottleBucket.OpsWrite].Avg == 0)
            throw new OptionException("iops size requires an iops value to be set");

        foreach (var bucket in Buckets)
        {
            if (bucket.Avg > ValueMax || bucket.Max > ValueMax)
                throw new OptionException($"bps/iops/max values must be within [0, {ValueMax}]");
            if (bucket.BurstLength == 0) throw new OptionException("the burst length cannot be 0");
            if (bucket.BurstLength > 1 && bucket.Max == 0) throw new OptionException("burst length set without burst rate");
            if (bucket.Max != 0 && bucket.BurstLength > ValueMax / bucket.Max)
                throw new OptionException("burst length too high for this burst rate");
            if (bucket.Max != 0 && bucket.Avg == 0) throw new OptionException("bps_max/iops_max require corresponding bps/iops values");
            if (bucket.Max != 0 && bucket.Max < bucket.Avg) throw new OptionException("bps_max/iops_max cannot be lower than bps/iops");
        }
    }
}

/// <summary>What one ThrottleLimits key (or its <c>x-</c> QOM property) sets.</summary>
public enum ThrottleLimitKind
{
    /// <summary>The bucket's average rate.</summary>
    Avg,
    /// <summary>The bucket's burst rate.</summary>
    Max,
    /// <summary>The bucket's burst length.</summary>
    BurstLength,
    /// <summary>The operation size (no bucket).</summary>
    OpSize,
}

/// <summary>A key of ThrottleLimits: its name, its bucket and what it sets.</summary>
public readonly record struct ThrottleLimitKey(string Name, ThrottleBucket Bucket, ThrottleLimitKind Kind)
{
    /// <summary>The keys in QAPI's order (qapi/block-core.json ThrottleLimits; the x- properties follow it too).</summary>
    public static readonly IReadOnlyList<ThrottleLimitKey> All =
    [
        new("iops-total", ThrottleBucket.OpsTotal, ThrottleLimitKind.Avg),
        new("iops-total-max", ThrottleBucket.OpsTotal, ThrottleLimitKind.Max),
        new("iops-total-max-length", ThrottleBucket.OpsTotal, ThrottleLimitKind.BurstLength),
        new("iops-read", ThrottleBucket.OpsRead, ThrottleLimitKind.Avg),
        new("iops-read-max", ThrottleBucket.OpsRead, ThrottleLimitKind.Max),
        new("iops-read-max-length", ThrottleBucket.OpsRead, ThrottleLimitKind.BurstLength),
        new("iops-write", ThrottleBucket.OpsWrite, ThrottleLimitKind.Avg),
        new("iops-write-max", ThrottleBucket.OpsWrite, ThrottleLimitKind.Max),
        new("iops-write-max-length", ThrottleBucket.OpsWrite, ThrottleLimitKind.BurstLength),
        new("bps-total", ThrottleBucket.BpsTotal, ThrottleLimitKind.Avg),
        new("bps-total-max", ThrottleBucket.BpsTotal, ThrottleLimitKind.Max),
        new("bps-total-max-length", ThrottleBucket.BpsTotal, ThrottleLimitKind.BurstLength),
        new("bps-read", ThrottleBucket.BpsRead, ThrottleLimitKind.Avg),
        new("bps-read-max", ThrottleBucket.BpsRead, ThrottleLimitKind.Max),
        new("bps-read-max-length", ThrottleBucket.BpsRead, ThrottleLimitKind.BurstLength),
        new("bps-write", ThrottleBucket.BpsWrite, ThrottleLimitKind.Avg),
        new("bps-write-max", ThrottleBucket.BpsWrite, ThrottleLimitKind.Max),
        new("bps-write-max-length", ThrottleBucket.BpsWrite, ThrottleLimitKind.BurstLength),
        new("iops-size", ThrottleBucket.OpsTotal, ThrottleLimitKind.OpSize),
    ];

    /// <summary>The value this key has in <paramref name="config"/> (throttle_config_to_limits).</summary>
    public long Get(ThrottleConfig config) => Kind switch
    {
        ThrottleLimitKind.Avg => unchecked((long)config[Bucket].Avg),
        ThrottleLimitKind.Max => unchecked((long)config[Bucket].Max),
        ThrottleLimitKind.BurstLength => config[Bucket].BurstLength,
        _ => unchecked((long)config.OpSize),
    };

    /// <summary>
    /// Sets the key in <paramref name="config"/> as throttle_limits_to_config does: an int64
    /// stored into QEMU's unsigned fields (a negative rate becomes huge and fails validation),
    /// a burst length over UINT_MAX refused with <paramref name="rangeMessage"/>.
    /// </summary>
    /// <exception cref="OptionException">A burst length out of range.</exception>
    public void Set(ThrottleConfig config, long value, string rangeMessage)
    {
        switch (Kind)
        {
            case ThrottleLimitKind.Avg: config[Bucket].Avg = unchecked((ulong)value); break;
            case ThrottleLimitKind.Max: config[Bucket].Max = unchecked((ulong)value); break;
            case ThrottleLimitKind.OpSize: config.OpSize = unchecked((ulong)value); break;
            default:
                // A signed comparison in QEMU: a negative length passes and wraps (then fails validation).
                if (value > uint.MaxValue) throw new OptionException(rangeMessage);
                config[Bucket].BurstLength = unchecked((uint)value);
                break;
        }
    }
}
