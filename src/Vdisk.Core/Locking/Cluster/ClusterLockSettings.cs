using System.Globalization;
using Vdisk.Options;

namespace Vdisk.Locking.Cluster;

/// <summary>
/// Where cluster locks live and how long a holder's claim outlives its last sign of life: the
/// etcd endpoints, the lease TTL, this host's identity and the self-fencing margin. Read from
/// the environment (<c>VDISK_ETCD_ENDPOINTS</c>, <c>VDISK_ETCD_TTL</c>, <c>VDISK_HOST_ID</c>, ...)
/// or from a <c>--cluster endpoints=...,ttl=...</c> option string.
/// </summary>
public sealed record ClusterLockSettings
{
    /// <summary>The shortest lease TTL accepted (etcd's own minimum is about 1.5 s; fencing needs room below it).</summary>
    public const int MinTtlSeconds = 2;

    /// <summary>The longest lease TTL accepted: a dead holder blocks its images for this long.</summary>
    public const int MaxTtlSeconds = 86400;

    /// <summary>The default lease TTL in seconds.</summary>
    public const int DefaultTtlSeconds = 10;

    /// <summary>The etcd client URLs (<c>http://HOST:PORT</c>), tried in order, the first that answers used.</summary>
    public IReadOnlyList<Uri> Endpoints { get; init; } = [];

    /// <summary>Seconds a holder's keys survive without keep-alive (the lease TTL).</summary>
    public int TtlSeconds { get; init; } = DefaultTtlSeconds;

    /// <summary>This host's name in holder records (default: the host name).</summary>
    public string HostId { get; init; } = DefaultHostId();

    /// <summary>
    /// How long before the lease could expire a holder stops writing when keep-alive is not
    /// confirmed; null uses <see cref="EffectiveFenceMargin"/>'s default (a fifth of the TTL, at least 0.5 s).
    /// </summary>
    public TimeSpan? FenceMargin { get; init; }

    /// <summary>How long one request may take on one endpoint before the next endpoint is tried.</summary>
    public TimeSpan AttemptTimeout { get; init; } = TimeSpan.FromSeconds(2);

    /// <summary>How long one operation (all endpoints, repeated while the cluster elects a leader) may take.</summary>
    public TimeSpan OperationTimeout { get; init; } = TimeSpan.FromSeconds(6);

    /// <summary>The key prefix of every key vdisk writes (default <c>vdisk/v1/</c>), so several deployments or test runs can share a cluster.</summary>
    public string KeyPrefix { get; init; } = "vdisk/v1/";

    /// <summary>The lease TTL as a span.</summary>
    public TimeSpan Ttl => TimeSpan.FromSeconds(TtlSeconds);

    /// <summary>The self-fencing margin in effect: the holder fences itself after TTL minus this without a confirmed keep-alive.</summary>
    public TimeSpan EffectiveFenceMargin => FenceMargin ?? TimeSpan.FromTicks(Math.Max(Ttl.Ticks / 5, TimeSpan.FromMilliseconds(500).Ticks));

    /// <summary>How often keep-alive is sent: a quarter of the time a holder may go unconfirmed.</summary>
    public TimeSpan KeepAliveInterval => (Ttl - EffectiveFenceMargin) / 4;

    /// <summary>The environment variables read by <see cref="FromEnvironment"/>.</summary>
    public const string EndpointsVariable = "VDISK_ETCD_ENDPOINTS", TtlVariable = "VDISK_ETCD_TTL", HostIdVariable = "VDISK_HOST_ID",
        FenceMarginVariable = "VDISK_ETCD_FENCE_MARGIN", PrefixVariable = "VDISK_ETCD_PREFIX", TimeoutVariable = "VDISK_ETCD_TIMEOUT";

    /// <summary>
    /// Settings from the environment. Invalid values fail with one line naming the variable.
    /// Missing endpoints are not an error here (see <see cref="RequireEndpoints"/>).
    /// </summary>
    /// <exception cref="OptionException">A variable has an invalid value.</exception>
    public static ClusterLockSettings FromEnvironment(Func<string, string?>? environment = null)
    {
        environment ??= Environment.GetEnvironmentVariable;
        var settings = new ClusterLockSettings();
        if (Nonempty(environment(EndpointsVariable)) is { } endpoints) settings = settings with { Endpoints = ParseEndpoints(endpoints, EndpointsVariable) };
        if (Nonempty(environment(TtlVariable)) is { } ttl) settings = settings with { TtlSeconds = ParseTtl(ttl, TtlVariable) };
        if (Nonempty(environment(HostIdVariable)) is { } host) settings = settings with { HostId = ParseHostId(host, HostIdVariable) };
        if (Nonempty(environment(FenceMarginVariable)) is { } margin) settings = settings with { FenceMargin = ParseSeconds(margin, FenceMarginVariable, "fence margin") };
        if (Nonempty(environment(PrefixVariable)) is { } prefix) settings = settings with { KeyPrefix = ParsePrefix(prefix, PrefixVariable) };
        if (Nonempty(environment(TimeoutVariable)) is { } timeout) settings = settings.WithTimeout(ParseSeconds(timeout, TimeoutVariable, "etcd timeout"));
        settings.CheckMargin(environment(FenceMarginVariable) is not null ? FenceMarginVariable : TtlVariable);
        return settings;
    }

    /// <summary>
    /// These settings with the keys of an option string applied:
    /// <c>endpoints=URL[,URL...],ttl=SECONDS,host-id=NAME,fence-margin=SECONDS,prefix=P,timeout=SECONDS</c>. A
    /// word without <c>=</c> continues the endpoint list, so <c>endpoints=http://a:1,http://b:2</c> works.
    /// </summary>
    /// <exception cref="OptionException">An unknown key or an invalid value, worded <c>--cluster KEY: ...</c>.</exception>
    public ClusterLockSettings WithOptions(string text)
    {
        var settings = this;
        string? lastKey = null;
        var endpoints = new List<string>();
        bool marginGiven = false;
        foreach (var part in text.Split(','))
        {
            if (part.Length == 0) continue;
            int eq = part.IndexOf('=');
            if (eq < 0)
            {
                if (lastKey != "endpoints") throw new OptionException($"--cluster: '{part}' is not KEY=VALUE (keys: endpoints, ttl, host-id, fence-margin, prefix, timeout)");
                endpoints.Add(part);
                continue;
            }
            string key = part[..eq], value = part[(eq + 1)..];
            lastKey = key;
            string source = "--cluster " + key;
            switch (key)
            {
                case "endpoints":
                    endpoints.Add(value);
                    break;
                case "ttl":
                    settings = settings with { TtlSeconds = ParseTtl(value, source) };
                    break;
                case "host-id":
                    settings = settings with { HostId = ParseHostId(value, source) };
                    break;
                case "fence-margin":
                    settings = settings with { FenceMargin = ParseSeconds(value, source, "fence margin") };
                    marginGiven = true;
                    break;
                case "prefix":
                    settings = settings with { KeyPrefix = ParsePrefix(value, source) };
                    break;
                case "timeout":
                    settings = settings.WithTimeout(ParseSeconds(value, source, "etcd timeout"));
                    break;
                default:
                    throw new OptionException($"--cluster: unknown key '{key}' (keys: endpoints, ttl, host-id, fence-margin, prefix, timeout)");
            }
        }
        if (endpoints.Count > 0) settings = settings with { Endpoints = ParseEndpoints(string.Join(',', endpoints), "--cluster endpoints") };
        settings.CheckMargin(marginGiven ? "--cluster fence-margin" : "--cluster ttl");
        return settings;
    }

    /// <summary>
    /// These settings with <paramref name="timeout"/> for one whole operation (a slow link, or a
    /// start-up on a loaded host); one endpoint's attempt never outlasts it.
    /// </summary>
    public ClusterLockSettings WithTimeout(TimeSpan timeout) =>
        this with { OperationTimeout = timeout, AttemptTimeout = timeout < AttemptTimeout ? timeout : AttemptTimeout };

    /// <summary>Fails unless endpoints are configured: cluster locks were asked for but nowhere to take them.</summary>
    /// <exception cref="OptionException">No endpoints.</exception>
    public void RequireEndpoints(string lockId)
    {
        if (Endpoints.Count == 0)
            throw new OptionException($"cluster-lock-id '{lockId}' needs etcd endpoints: set {EndpointsVariable}=http://HOST:PORT[,...] or --cluster endpoints=...");
    }

    /// <summary>Parses a comma-separated endpoint list.</summary>
    /// <exception cref="OptionException">An endpoint is not <c>http(s)://HOST:PORT</c>.</exception>
    public static IReadOnlyList<Uri> ParseEndpoints(string text, string source)
    {
        var result = new List<Uri>();
        foreach (var raw in text.Split(','))
        {
            string item = raw.Trim();
            if (item.Length == 0) continue;
            if (!Uri.TryCreate(item, UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https") || uri.Host.Length == 0 ||
                uri.IsDefaultPort && !item.Contains(":" + uri.Port.ToString(CultureInfo.InvariantCulture), StringComparison.Ordinal) ||
                uri.AbsolutePath != "/" || uri.Query.Length > 0 || uri.UserInfo.Length > 0)
                throw new OptionException($"{source}: invalid etcd endpoint '{item}': expected http://HOST:PORT or https://HOST:PORT");
            result.Add(uri);
        }
        if (result.Count == 0) throw new OptionException($"{source}: no etcd endpoint given: expected http://HOST:PORT[,...]");
        return result;
    }

    /// <summary>Parses a TTL in whole seconds.</summary>
    /// <exception cref="OptionException">Not a whole number in range.</exception>
    public static int ParseTtl(string text, string source)
    {
        if (!int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int ttl) || ttl < MinTtlSeconds || ttl > MaxTtlSeconds)
            throw new OptionException($"{source}: invalid lease TTL '{text}': expected whole seconds from {MinTtlSeconds} to {MaxTtlSeconds}");
        return ttl;
    }

    /// <summary>Parses a host id: 1 to 64 printable characters without '/' or spaces.</summary>
    /// <exception cref="OptionException">Empty, too long or with unusable characters.</exception>
    public static string ParseHostId(string text, string source)
    {
        if (text.Length is 0 or > 64 || text.Any(c => c <= ' ' || c == '/' || c > '~'))
            throw new OptionException($"{source}: invalid host id '{text}': expected 1 to 64 printable ASCII characters without '/' or spaces");
        return text;
    }

    private static TimeSpan ParseSeconds(string text, string source, string what)
    {
        if (!double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double seconds) || !double.IsFinite(seconds) || seconds <= 0 || seconds > MaxTtlSeconds)
            throw new OptionException($"{source}: invalid {what} '{text}': expected a positive number of seconds");
        return TimeSpan.FromSeconds(seconds);
    }

    private static string ParsePrefix(string text, string source)
    {
        if (text.Length == 0 || !text.EndsWith('/') || text.Any(c => c <= ' ' || c > '~'))
            throw new OptionException($"{source}: invalid key prefix '{text}': expected printable ASCII ending in '/'");
        return text;
    }

    private void CheckMargin(string source)
    {
        if (EffectiveFenceMargin >= Ttl)
            throw new OptionException($"{source}: the fence margin ({EffectiveFenceMargin.TotalSeconds.ToString(CultureInfo.InvariantCulture)} s) must be shorter than the lease TTL ({TtlSeconds} s)");
    }

    private static string? Nonempty(string? s) => string.IsNullOrEmpty(s) ? null : s;

    private static string DefaultHostId()
    {
        string name = Environment.MachineName;
        return name.Length is > 0 and <= 64 && !name.Any(c => c <= ' ' || c == '/' || c > '~') ? name : "localhost";
    }

    /// <summary>The longest <c>cluster-lock-id</c>.</summary>
    public const int MaxLockIdLength = 200;

    /// <summary>
    /// Checks a <c>cluster-lock-id</c>: 1 to 200 letters, digits and <c>-_.:@+</c> (a WWID such
    /// as <c>naa.6001405...</c> fits), so that it is one etcd key segment.
    /// </summary>
    /// <exception cref="OptionException">An empty, too long or ill-formed id.</exception>
    public static string ValidateLockId(string id)
    {
        if (id.Length is 0 or > MaxLockIdLength || !id.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.' or ':' or '@' or '+'))
            throw new OptionException($"Invalid cluster-lock-id '{id}': expected 1 to 200 letters, digits and -_.:@+");
        return id;
    }

    /// <inheritdoc />
    public bool Equals(ClusterLockSettings? other) =>
        other is not null && Endpoints.SequenceEqual(other.Endpoints) && TtlSeconds == other.TtlSeconds && HostId == other.HostId &&
        FenceMargin == other.FenceMargin && AttemptTimeout == other.AttemptTimeout && OperationTimeout == other.OperationTimeout &&
        KeyPrefix == other.KeyPrefix;

    /// <inheritdoc />
    public override int GetHashCode() => HashCode.Combine(Endpoints.Count, TtlSeconds, HostId, KeyPrefix);
}
