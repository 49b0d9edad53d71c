using System.Globalization;
using Vdisk.Locking.Cluster;
using Xunit;

namespace Vdisk.Interop.Cluster;

/// <summary>One 3-member etcd cluster for the cluster tests (started once, about a second).</summary>
public sealed class EtcdFixture : IDisposable
{
    public EtcdCluster Cluster { get; } = EtcdCluster.Start(3);

    public void Dispose() => Cluster.Dispose();
}

[CollectionDefinition("etcd", DisableParallelization = true)]
public sealed class EtcdCollection : ICollectionFixture<EtcdFixture>;

/// <summary>
/// What one test needs of a cluster: a key prefix of its own (so tests never see each other's
/// keys), the environment that makes a vdisk process a "host" (VDISK_ETCD_*, VDISK_HOST_ID), and a
/// store to look into etcd with.
/// </summary>
public sealed class ClusterScope : IDisposable
{
    public ClusterScope(string endpoints, int ttlSeconds = 3, double? fenceMargin = null)
    {
        Endpoints = endpoints;
        TtlSeconds = ttlSeconds;
        FenceMargin = fenceMargin;
        Prefix = "vdisk-test/" + Guid.NewGuid().ToString("N")[..12] + "/";
        Settings = new ClusterLockSettings
        {
            Endpoints = ClusterLockSettings.ParseEndpoints(endpoints, "test"),
            TtlSeconds = ttlSeconds,
            KeyPrefix = Prefix,
            HostId = "test",
            FenceMargin = fenceMargin is { } m ? TimeSpan.FromSeconds(m) : null,
        };
        Store = new EtcdStore(Settings);
    }

    public string Endpoints { get; }
    public int TtlSeconds { get; }
    public double? FenceMargin { get; }
    public string Prefix { get; }
    public ClusterLockSettings Settings { get; }
    public EtcdStore Store { get; }

    /// <summary>The environment of a vdisk process on host <paramref name="host"/>.</summary>
    public Dictionary<string, string> Env(string host, string? endpoints = null)
    {
        var env = new Dictionary<string, string>
        {
            ["VDISK_ETCD_ENDPOINTS"] = endpoints ?? Endpoints,
            ["VDISK_ETCD_TTL"] = TtlSeconds.ToString(CultureInfo.InvariantCulture),
            ["VDISK_ETCD_PREFIX"] = Prefix,
            ["VDISK_HOST_ID"] = host,
        };
        if (FenceMargin is { } m) env["VDISK_ETCD_FENCE_MARGIN"] = m.ToString(CultureInfo.InvariantCulture);
        return env;
    }

    /// <summary>The holders etcd has for <paramref name="lockId"/> now.</summary>
    public IReadOnlyList<ClusterHolding> Holders(string lockId) =>
        ClusterHolding.FromEntries(Prefix, Store.ReadAsync(ClusterKeys.Image(Prefix, lockId), CancellationToken.None).GetAwaiter().GetResult().Entries);

    /// <summary>Every key under this test's prefix, with the revision they were read at.</summary>
    public StoreResult Snapshot() => Store.ReadAsync(Prefix, CancellationToken.None).GetAwaiter().GetResult();

    /// <summary>A lease nobody renews (a clock that etcd runs).</summary>
    public long GrantLease(int ttlSeconds) => Store.GrantLeaseAsync(ttlSeconds, CancellationToken.None).GetAwaiter().GetResult().Id;

    /// <summary>Every key under this test's prefix.</summary>
    public IReadOnlyList<StoreEntry> AllKeys() => Store.ReadAsync(Prefix, CancellationToken.None).GetAwaiter().GetResult().Entries;

    /// <summary>True while etcd still has the lease.</summary>
    public bool LeaseAlive(long lease) => Store.LeaseTimeToLiveAsync(lease, CancellationToken.None).GetAwaiter().GetResult() >= 0;

    /// <summary>Waits (polling etcd, with a deadline) until <paramref name="condition"/> holds.</summary>
    public static void Until(Func<bool> condition, string what, TimeSpan? timeout = null)
    {
        var deadline = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(60));
        while (!condition())
        {
            if (DateTime.UtcNow > deadline) throw new TimeoutException("never " + what);
            Thread.Sleep(20);
        }
    }

    /// <summary>An --image-opts string for a file under cluster lock <paramref name="lockId"/>.</summary>
    public static string ImageOpts(string format, string file, string lockId, string extra = "") =>
        $"driver={format},file.driver=file,file.filename={file.Replace(",", ",,")},file.cluster-lock-id={lockId}{extra}";

    public void Dispose() => Store.Dispose();
}
