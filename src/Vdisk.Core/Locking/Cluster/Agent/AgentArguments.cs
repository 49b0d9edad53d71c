using System.Globalization;

namespace Vdisk.Locking.Cluster.Agent;

/// <summary>
/// The etcd helper's command line: what its store needs from <see cref="ClusterLockSettings"/>
/// (<c>--endpoints URL[,URL...] --attempt-timeout-ms N --operation-timeout-ms N</c>).
/// </summary>
public static class AgentArguments
{
    /// <summary>The arguments for <paramref name="settings"/>.</summary>
    public static IReadOnlyList<string> Format(ClusterLockSettings settings) =>
    [
        "--endpoints", string.Join(",", settings.Endpoints.Select(e => e.OriginalString)),
        "--attempt-timeout-ms", ((long)settings.AttemptTimeout.TotalMilliseconds).ToString(CultureInfo.InvariantCulture),
        "--operation-timeout-ms", ((long)settings.OperationTimeout.TotalMilliseconds).ToString(CultureInfo.InvariantCulture),
    ];

    /// <summary>The settings <paramref name="args"/> give.</summary>
    /// <exception cref="ArgumentException">An unknown or incomplete argument (the message says which).</exception>
    public static ClusterLockSettings Parse(IReadOnlyList<string> args)
    {
        var settings = new ClusterLockSettings();
        for (int i = 0; i < args.Count; i++)
        {
            if (i + 1 >= args.Count) throw new ArgumentException($"option '{args[i]}' requires an argument");
            string value = args[++i];
            settings = args[i - 1] switch
            {
                "--endpoints" => settings with { Endpoints = [.. value.Split(',', StringSplitOptions.RemoveEmptyEntries).Select(u => new Uri(u))] },
                "--attempt-timeout-ms" => settings with { AttemptTimeout = TimeSpan.FromMilliseconds(Milliseconds(value)) },
                "--operation-timeout-ms" => settings with { OperationTimeout = TimeSpan.FromMilliseconds(Milliseconds(value)) },
                var other => throw new ArgumentException($"unrecognized option '{other}'"),
            };
        }
        if (settings.Endpoints.Count == 0) throw new ArgumentException("--endpoints is required");
        return settings;
    }

    private static long Milliseconds(string text) =>
        long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out long ms) && ms > 0 ? ms : throw new ArgumentException($"invalid milliseconds '{text}'");
}
