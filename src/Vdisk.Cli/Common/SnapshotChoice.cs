using Vdisk.Native;
using Vdisk.Options;

namespace Vdisk.Cli.Common;

/// <summary>
/// qemu-img convert's <c>-l</c> (7.2 no longer has the older <c>-s</c>): which internal snapshot of the source to convert
/// instead of its active state, either by <c>snapshot.id</c>/<c>snapshot.name</c> or by one
/// string tried as an id first and then as a name (bdrv_snapshot_load_tmp_by_id_or_name).
/// </summary>
internal sealed class SnapshotChoice
{
    private const string OptionBase = "snapshot.";

    private SnapshotChoice(string? id, string? name, string? idOrName)
    {
        Id = id;
        Name = name;
        IdOrName = idOrName;
    }

    /// <summary>snapshot.id (with the snapshot.* form).</summary>
    public string? Id { get; }

    /// <summary>snapshot.name (with the snapshot.* form).</summary>
    public string? Name { get; }

    /// <summary>The one string of a plain <c>-l</c>; null with the snapshot.* form.</summary>
    public string? IdOrName { get; }

    /// <summary>
    /// The reading of -l: a value that starts with <c>snapshot.</c> is parsed as options, any
    /// other names the snapshot. False after printing QEMU's error for a malformed one (qemu-nbd
    /// quotes the value `so', qemu-img 'so': <paramref name="nbdQuotes"/>).
    /// </summary>
    public static bool TryParse(string? param, out SnapshotChoice? choice, bool nbdQuotes = false)
    {
        choice = null;
        if (param is null) return true;
        if (!param.StartsWith(OptionBase, StringComparison.Ordinal))
        {
            choice = new SnapshotChoice(null, null, param);
            return true;
        }
        string? id = null, name = null;
        try
        {
            foreach (var (key, value) in KeyValParser.Parse(param, KeyValDialect.QemuOpts, warn: Diagnostics.WarningSink).Flatten())
            {
                string text = (value as OptionScalar)?.Text ?? "";
                switch (key)
                {
                    case "snapshot.id": id = text; break;
                    case "snapshot.name": name = text; break;
                    default: throw new OptionException($"Invalid parameter '{key}'");
                }
            }
        }
        catch (OptionException e)
        {
            Stdio.Error(e.Message);
            Stdio.Error(nbdQuotes ? $"Failed in parsing snapshot param `{param}'" : $"Failed in parsing snapshot param '{param}'");
            return false;
        }
        choice = new SnapshotChoice(id, name, null);
        return true;
    }

    /// <summary>Loads the snapshot into the first image (the sources of convert); false after printing QEMU's error.</summary>
    public async Task<bool> LoadAsync(IReadOnlyList<DiskImage> sources, CancellationToken ct)
    {
        var root = sources[0].Root;
        try
        {
            if (IdOrName is null)
            {
                if (Id is null && Name is null) throw new NativeIOException(Errno.EINVAL, "snapshot_id and name are both NULL");
                await root.LoadSnapshotTemporarilyAsync(Id, Name, ct).ConfigureAwait(false);
                return true;
            }
            if (sources.Count > 1)
            {
                Stdio.Error("No support for concatenating multiple snapshot");
                return false;
            }
            try
            {
                await root.LoadSnapshotTemporarilyAsync(IdOrName, null, ct).ConfigureAwait(false);
            }
            catch (NativeIOException e) when (e.Errno is Errno.ENOENT or Errno.EINVAL)
            {
                await root.LoadSnapshotTemporarilyAsync(null, IdOrName, ct).ConfigureAwait(false);
            }
            return true;
        }
        catch (IOException e)
        {
            Stdio.Error("Failed to load snapshot: " + e.Message);
            return false;
        }
    }
}
