using System.Globalization;
using System.Text;
using Vdisk.Cli.Common;
using Vdisk.Inspection;
using Vdisk.Locking.Cluster;
using Vdisk.Permissions;

namespace Vdisk.Cli.Locks;

/// <summary>
/// <c>vdisk locks --cluster [ID...]</c>: what etcd holds per cluster-lock-id (every id with
/// holders when none is named), a row per holder with its host, PID, fencing token and lease
/// time left, then a verdict per mode, worded as for local locks.
/// </summary>
internal static class ClusterLocksView
{
    private static readonly string[] Header = ["HOST", "PID", "TOKEN", "TTL", "BYTES", "HOLDS", "REFUSES", "FILE", "COMMAND"];

    /// <summary>Lists the holders of <paramref name="ids"/> in the etcd of <paramref name="configured"/> (null: the environment's).</summary>
    public static int Run(ClusterLockSettings? configured, string[] ids, AccessMode? asked, string format, bool json)
    {
        ClusterLockSettings settings;
        IReadOnlyList<ClusterImageLocks> images;
        try
        {
            settings = configured ?? ClusterLockSettings.FromEnvironment();
            if (settings.Endpoints.Count == 0)
            {
                Stdio.Error($"--cluster needs etcd endpoints: set {ClusterLockSettings.EndpointsVariable}=http://HOST:PORT[,...] or --cluster endpoints=...");
                return LocksCommand.ExitError;
            }
            using var store = new Vdisk.Locking.Cluster.Agent.AgentClusterStore(settings);
            images = new ClusterInspector(store, settings.KeyPrefix).Inspect(ids);
        }
        catch (Exception e) when (e is Options.OptionException or IOException)
        {
            Stdio.Error(e.Message);
            return LocksCommand.ExitError;
        }
        var modes = asked is { } one ? [one] : AccessModes.All;
        if (json)
        {
            Stdio.Out.Write(ClusterReportJson.ToJson(images, modes, format, settings));
            Stdio.Out.Write('\n');
        }
        else
        {
            bool first = true;
            foreach (var image in images)
            {
                if (!first) Stdio.Out.Write('\n');
                first = false;
                Write(Stdio.Out, image, modes, format);
            }
            if (ids.Length == 0) Stdio.Out.Write($"{images.Count} image(s) with cluster locks\n");
        }
        Stdio.Out.Flush();
        if (asked is { } wanted && images.Any(i => !i.Verdict(wanted, format).Admitted)) return LocksCommand.ExitBlocked;
        return LocksCommand.ExitAdmitted;
    }

    private static void Write(TextWriter w, ClusterImageLocks image, IReadOnlyList<AccessMode> modes, string format)
    {
        if (image.Holders.Count == 0)
        {
            w.Write($"{image.LockId}: no locks\n");
            return;
        }
        w.Write($"{image.LockId}: {image.Holders.Count} holder(s)\n");
        var rows = new List<string[]> { Header };
        foreach (var h in image.Holders)
        {
            var c = h.Cluster!;
            rows.Add(
            [
                c.Record.Host,
                c.Record.Pid.ToString(CultureInfo.InvariantCulture),
                c.FencingToken,
                image.LeaseSeconds.TryGetValue(c.Record.Lease, out long ttl) && ttl >= 0 ? ttl.ToString(CultureInfo.InvariantCulture) + "s" : "expired",
                string.Join(",", c.Bytes.Select(b => b.ToString(CultureInfo.InvariantCulture))),
                h.Holds == BlockPermission.None ? "-" : BlockPermissions.Describe(h.Holds),
                h.Refuses == BlockPermission.None ? "-" : BlockPermissions.Describe(h.Refuses),
                c.Record.File,
                c.Record.Command,
            ]);
        }
        var widths = new int[Header.Length];
        foreach (var row in rows)
            for (int i = 0; i < row.Length - 1; i++) widths[i] = Math.Max(widths[i], row[i].Length);
        foreach (var row in rows)
        {
            var sb = new StringBuilder("  ");
            for (int i = 0; i < row.Length; i++) sb.Append(i < row.Length - 1 ? row[i].PadRight(widths[i] + 2) : row[i]);
            w.Write(sb.ToString().TrimEnd() + "\n");
        }
        foreach (var mode in modes)
        {
            var v = image.Verdict(mode, format);
            string label = $"{AccessModes.Name(mode)} ({AccessModes.Tool(mode)}{(format == "raw" ? "" : " -f " + format)})";
            w.Write(v.Admitted ? $"  {label}: admitted\n" : $"  {label}: blocked: {v.Error}. {v.Reason}\n");
        }
    }
}
