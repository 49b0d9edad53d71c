using Vdisk.Locking.Cluster;
using Vdisk.Options;
using Xunit;

namespace Vdisk.Tests.Locking.Cluster;

/// <summary>Cluster settings from the environment and from <c>--cluster</c>: values, defaults, and one clear line per mistake.</summary>
public class ClusterLockSettingsTests
{
    private static ClusterLockSettings FromEnv(params (string Name, string Value)[] vars) =>
        ClusterLockSettings.FromEnvironment(name => vars.FirstOrDefault(v => v.Name == name).Value);

    [Fact]
    public void Environment_GivesEndpointsTtlHostAndMargin()
    {
        var s = FromEnv(("VDISK_ETCD_ENDPOINTS", "http://127.0.0.1:2379, http://10.0.0.2:2379"), ("VDISK_ETCD_TTL", "4"), ("VDISK_HOST_ID", "B"));
        Assert.Equal(["http://127.0.0.1:2379/", "http://10.0.0.2:2379/"], s.Endpoints.Select(u => u.ToString()));
        Assert.Equal(4, s.TtlSeconds);
        Assert.Equal("B", s.HostId);
        // A fifth of the TTL, at least half a second; keep-alive four times within what is left.
        Assert.Equal(TimeSpan.FromSeconds(0.8), s.EffectiveFenceMargin);
        Assert.Equal(TimeSpan.FromSeconds(0.8), s.KeepAliveInterval);
        var defaults = FromEnv();
        Assert.Empty(defaults.Endpoints);
        Assert.Equal(10, defaults.TtlSeconds);
        Assert.Equal(TimeSpan.FromSeconds(2), defaults.EffectiveFenceMargin);
        Assert.Equal("vdisk/v1/", defaults.KeyPrefix);
    }

    [Fact]
    public void ClusterOption_ContinuesTheEndpointListAfterCommas_AndOverridesTheEnvironment()
    {
        var s = FromEnv(("VDISK_ETCD_TTL", "30")).WithOptions("endpoints=http://a:1,http://b:2,ttl=3,host-id=h1,fence-margin=1.5,prefix=t/x/");
        Assert.Equal(["http://a:1/", "http://b:2/"], s.Endpoints.Select(u => u.ToString()));
        Assert.Equal(3, s.TtlSeconds);
        Assert.Equal("h1", s.HostId);
        Assert.Equal(TimeSpan.FromSeconds(1.5), s.EffectiveFenceMargin);
        Assert.Equal("t/x/", s.KeyPrefix);
    }

    [Fact]
    public void Timeout_BoundsOneEtcdOperation_AndNoAttemptOutlastsIt()
    {
        var defaults = FromEnv();
        Assert.Equal((TimeSpan.FromSeconds(6), TimeSpan.FromSeconds(2)), (defaults.OperationTimeout, defaults.AttemptTimeout));
        var slow = FromEnv(("VDISK_ETCD_TIMEOUT", "30"));
        Assert.Equal((TimeSpan.FromSeconds(30), TimeSpan.FromSeconds(2)), (slow.OperationTimeout, slow.AttemptTimeout));
        var quick = new ClusterLockSettings().WithOptions("timeout=0.5");
        Assert.Equal((TimeSpan.FromSeconds(0.5), TimeSpan.FromSeconds(0.5)), (quick.OperationTimeout, quick.AttemptTimeout));
    }

    [Theory]
    [InlineData("VDISK_ETCD_ENDPOINTS", "127.0.0.1:2379", "VDISK_ETCD_ENDPOINTS: invalid etcd endpoint '127.0.0.1:2379': expected http://HOST:PORT or https://HOST:PORT")]
    [InlineData("VDISK_ETCD_ENDPOINTS", "http://host", "VDISK_ETCD_ENDPOINTS: invalid etcd endpoint 'http://host': expected http://HOST:PORT or https://HOST:PORT")]
    [InlineData("VDISK_ETCD_ENDPOINTS", "ftp://h:1", "VDISK_ETCD_ENDPOINTS: invalid etcd endpoint 'ftp://h:1': expected http://HOST:PORT or https://HOST:PORT")]
    [InlineData("VDISK_ETCD_ENDPOINTS", ",", "VDISK_ETCD_ENDPOINTS: no etcd endpoint given: expected http://HOST:PORT[,...]")]
    [InlineData("VDISK_ETCD_TTL", "0", "VDISK_ETCD_TTL: invalid lease TTL '0': expected whole seconds from 2 to 86400")]
    [InlineData("VDISK_ETCD_TTL", "2.5", "VDISK_ETCD_TTL: invalid lease TTL '2.5': expected whole seconds from 2 to 86400")]
    [InlineData("VDISK_ETCD_TTL", "1", "VDISK_ETCD_TTL: invalid lease TTL '1': expected whole seconds from 2 to 86400")]
    [InlineData("VDISK_ETCD_TTL", "ten", "VDISK_ETCD_TTL: invalid lease TTL 'ten': expected whole seconds from 2 to 86400")]
    [InlineData("VDISK_HOST_ID", "a b", "VDISK_HOST_ID: invalid host id 'a b': expected 1 to 64 printable ASCII characters without '/' or spaces")]
    [InlineData("VDISK_ETCD_FENCE_MARGIN", "10", "VDISK_ETCD_FENCE_MARGIN: the fence margin (10 s) must be shorter than the lease TTL (10 s)")]
    [InlineData("VDISK_ETCD_FENCE_MARGIN", "-1", "VDISK_ETCD_FENCE_MARGIN: invalid fence margin '-1': expected a positive number of seconds")]
    [InlineData("VDISK_ETCD_TIMEOUT", "0", "VDISK_ETCD_TIMEOUT: invalid etcd timeout '0': expected a positive number of seconds")]
    public void BadEnvironment_IsOneLineNamingTheVariable(string name, string value, string expected)
    {
        var e = Assert.Throws<OptionException>(() => FromEnv((name, value)));
        Assert.Equal(expected, e.Message);
    }

    [Theory]
    [InlineData("endpoints=http://a:1,ttl=x", "--cluster ttl: invalid lease TTL 'x': expected whole seconds from 2 to 86400")]
    [InlineData("endpoint=http://a:1", "--cluster: unknown key 'endpoint' (keys: endpoints, ttl, host-id, fence-margin, prefix, timeout)")]
    [InlineData("ttl=3,http://a:1", "--cluster: 'http://a:1' is not KEY=VALUE (keys: endpoints, ttl, host-id, fence-margin, prefix, timeout)")]
    [InlineData("timeout=soon", "--cluster timeout: invalid etcd timeout 'soon': expected a positive number of seconds")]
    [InlineData("endpoints=http://a:1,ttl=2,fence-margin=2", "--cluster fence-margin: the fence margin (2 s) must be shorter than the lease TTL (2 s)")]
    public void BadClusterOption_IsOneLine(string text, string expected)
    {
        var e = Assert.Throws<OptionException>(() => new ClusterLockSettings().WithOptions(text));
        Assert.Equal(expected, e.Message);
    }

    [Theory]
    [InlineData("vm42-disk0", true)]
    [InlineData("naa.6001405abcdef:lun0", true)]
    [InlineData("", false)]
    [InlineData("a/b", false)]
    [InlineData("a=b", false)]
    [InlineData("white space", false)]
    public void LockIds_AreOneKeySegment(string id, bool valid)
    {
        if (valid)
        {
            Assert.Equal(id, ClusterLockSettings.ValidateLockId(id));
            return;
        }
        var e = Assert.Throws<OptionException>(() => ClusterLockSettings.ValidateLockId(id));
        Assert.Equal($"Invalid cluster-lock-id '{id}': expected 1 to 200 letters, digits and -_.:@+", e.Message);
    }

    [Fact]
    public void MissingEndpoints_SayWhereToSetThem()
    {
        var e = Assert.Throws<OptionException>(() => new ClusterLockSettings().RequireEndpoints("vm42"));
        Assert.Equal("cluster-lock-id 'vm42' needs etcd endpoints: set VDISK_ETCD_ENDPOINTS=http://HOST:PORT[,...] or --cluster endpoints=...", e.Message);
    }

    [Fact]
    public void Keys_RoundTrip_AndRangeEndCoversExactlyThePrefix()
    {
        string key = ClusterKeys.Byte("vdisk/v1/", "vm42", 201, "694d.3");
        Assert.Equal("vdisk/v1/locks/vm42/201/694d.3", key);
        Assert.Equal(("vm42", 201, "694d.3"), ClusterKeys.Parse("vdisk/v1/", key));
        Assert.Null(ClusterKeys.Parse("vdisk/v1/", "vdisk/v1/locks/vm42/x/694d.3"));
        Assert.Null(ClusterKeys.Parse("vdisk/v1/", "other/locks/vm42/201/h"));
        Assert.Equal("vdisk/v1/locks/vm420"u8.ToArray(), ClusterKeys.RangeEnd("vdisk/v1/locks/vm42/"));
        var record = new ClusterHolderRecord("694d.3", "B", 1234, "vdisk serve", 0x694d, "/img", "disk0", "fe:0:12", null);
        Assert.Equal(record, ClusterHolderRecord.Decode(record.Encode()));
        Assert.Equal("host B, pid 1234 (vdisk serve)", record.Describe());
        Assert.Null(ClusterHolderRecord.Decode("not json"u8));
    }
}
