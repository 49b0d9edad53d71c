using Vdisk.Locking.Cluster;

namespace Vdisk.Cli.Common;

/// <summary>
/// <c>--cluster endpoints=URL[,URL...],ttl=SECONDS,host-id=NAME,fence-margin=SECONDS,prefix=P,timeout=SECONDS</c>,
/// accepted by every verb (<c>vdisk serve</c> too): the settings of cluster locks for this run,
/// over the <c>VDISK_ETCD_*</c> environment. Taken out of the arguments before a verb parses
/// them; a bare <c>--cluster</c> (no <c>=</c> in the next word) stays, for <c>vdisk locks --cluster</c>.
/// </summary>
internal static class ClusterOption
{
    /// <summary>The arguments without <c>--cluster KEY=VALUE,...</c>, whose settings are applied.</summary>
    /// <exception cref="Options.OptionException">A bad key or value (one line).</exception>
    public static string[] Apply(string[] args)
    {
        var rest = new List<string>(args.Length);
        for (int i = 0; i < args.Length; i++)
        {
            string arg = args[i];
            if (arg == "--")
            {
                rest.AddRange(args[i..]);
                break;
            }
            string? text = null;
            if (arg.StartsWith("--cluster=", StringComparison.Ordinal)) text = arg["--cluster=".Length..];
            else if (arg == "--cluster" && i + 1 < args.Length && args[i + 1].Contains('=')) text = args[++i];
            if (text is null)
            {
                rest.Add(arg);
                continue;
            }
            ClusterLocks.Configured = ClusterLocks.Settings.WithOptions(text);
            // vdisk locks --cluster endpoints=...: the settings, and the flag.
            if (args.Length > 0 && args[0] == "locks") rest.Add("--cluster");
        }
        return [.. rest];
    }
}
