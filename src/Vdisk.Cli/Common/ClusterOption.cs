using System.CommandLine;
using Vdisk.Graph;
using Vdisk.Locking.Cluster;

namespace Vdisk.Cli.Common;

/// <summary>
/// <c>--cluster endpoints=URL[,URL...],ttl=SECONDS,host-id=NAME,fence-margin=SECONDS,prefix=P,timeout=SECONDS</c>,
/// vdisk's option (not the QEMU tools') on every verb that opens images, beside <c>--wait</c>: the
/// settings of cluster locks for this run, over the <c>VDISK_ETCD_*</c> environment. Given more
/// than once, each applies on top of the ones before. The settings reach the file nodes through
/// the graph each open builds (<see cref="Graph"/>). <c>vdisk serve</c> reads it in its own
/// parser (<see cref="Serve.ServeCommand"/>); <c>vdisk locks</c> takes it with an optional value
/// (<see cref="AsFlag"/>), so that a bare <c>--cluster</c> asks for the cluster listing.
/// </summary>
internal sealed class ClusterOption : Option<string[]>
{
    private ClusterOption(bool flag) : base("--cluster")
    {
        Arity = flag ? ArgumentArity.ZeroOrMore : ArgumentArity.OneOrMore;
        AllowMultipleArgumentsPerToken = false;
        HelpName = "KEY=VALUE,...";
        IsFlag = flag;
        Description = flag
            ? "show cluster locks in etcd (VDISK_ETCD_ENDPOINTS or --cluster endpoints=...) for the given cluster-lock-ids, or for every id held"
            : "cluster-lock settings for this run over the VDISK_ETCD_* environment: endpoints=URL[,URL...],ttl=,host-id=,fence-margin=,prefix=,timeout= (docs/cluster.md)";
    }

    /// <summary>The option of a verb that opens images: a value is required.</summary>
    public static ClusterOption WithValue() => new(flag: false);

    /// <summary>
    /// <c>vdisk locks --cluster [KEY=VALUE,...]</c>: a flag whose value, attached or the next word
    /// when that word holds '=' (cluster-lock-ids never do), also sets the endpoints.
    /// </summary>
    public static ClusterOption AsFlag() => new(flag: true);

    /// <summary>True for <see cref="AsFlag"/>'s option.</summary>
    public bool IsFlag { get; }

    /// <summary>True when the verb's <c>--cluster</c> was given (with or without a value).</summary>
    public static bool Given(ParseResult result) => Find(result) is { } option && result.GetResult(option) is not null;

    /// <summary>
    /// The settings of the verb's <c>--cluster</c> values over the environment, or null when
    /// none was given (the environment is then read at each open that needs it).
    /// </summary>
    /// <exception cref="Options.OptionException">A bad key or value, or a bad environment variable (one line).</exception>
    public static ClusterLockSettings? Settings(ParseResult result)
    {
        if (Find(result) is not { } option || result.GetValue(option) is not { Length: > 0 } texts) return null;
        var settings = ClusterLockSettings.FromEnvironment();
        foreach (string text in texts) settings = settings.WithOptions(text);
        return settings;
    }

    /// <summary>A new graph for one image of the verb, carrying its cluster-lock settings.</summary>
    public static BlockGraph Graph(ParseResult result) => new() { ClusterLocks = Settings(result) };

    private static ClusterOption? Find(ParseResult result) =>
        result.CommandResult.Command.Options.OfType<ClusterOption>().FirstOrDefault();
}
