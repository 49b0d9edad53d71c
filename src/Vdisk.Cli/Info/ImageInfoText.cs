using System.Globalization;
using System.Text;
using Vdisk.Output;

namespace Vdisk.Cli.Info;

/// <summary>qemu-img info's human output (and the parts qemu-io's info and snapshot -l share).</summary>
internal static class ImageInfoText
{
    /// <summary>The human output of qemu-img info for one image.</summary>
    public static string Human(ImageInfo info)
    {
        var sb = new StringBuilder();
        sb.Append("image: ").Append(info.Filename).Append('\n');
        sb.Append("file format: ").Append(info.Format).Append('\n');
        sb.Append(CultureInfo.InvariantCulture, $"virtual size: {QemuText.SizeToStr(info.VirtualSize)} ({info.VirtualSize} bytes)\n");
        sb.Append("disk size: ").Append(info.ActualSize is long a ? QemuText.SizeToStr(a) : "unavailable").Append('\n');
        if (info.Encrypted) sb.Append("encrypted: yes\n");
        if (info.ClusterSize is long cs) sb.Append(CultureInfo.InvariantCulture, $"cluster_size: {cs}\n");
        if (info.DirtyFlag) sb.Append("cleanly shut down: no\n");
        if (info.BackingFilename is not null)
        {
            sb.Append("backing file: ").Append(info.BackingFilename);
            if (info.FullBackingFilename is null) sb.Append(" (cannot determine actual path)");
            else if (info.FullBackingFilename != info.BackingFilename) sb.Append(" (actual path: ").Append(info.FullBackingFilename).Append(')');
            sb.Append('\n');
            if (info.BackingFormat is not null) sb.Append("backing file format: ").Append(info.BackingFormat).Append('\n');
        }
        if (info.Snapshots.Count > 0)
        {
            sb.Append("Snapshot list:\n");
            sb.Append(SnapshotHeaderLine).Append('\n');
            foreach (var sn in info.Snapshots) sb.Append(SnapshotLine(sn)).Append('\n');
        }
        if (info.FormatSpecificType is not null)
        {
            sb.Append("Format specific information:\n").Append(FormatSpecific(info));
        }
        return sb.ToString();
    }

    /// <summary>
    /// The lines under "Format specific information:" as QEMU's dump_qobject prints them: QDict
    /// order, '-' shown as ' ', nested objects and lists indented by four spaces, list items as
    /// "[i]:". Empty when the format has no specific information.
    /// </summary>
    public static string FormatSpecific(ImageInfo info)
    {
        if (info.FormatSpecificObject() is not { } data) return "";
        var sb = new StringBuilder();
        DumpValue(sb, 1, data);
        return sb.ToString();
    }

    private static bool IsComposite(object? value) => value is QemuJsonObject || (value is System.Collections.IEnumerable && value is not string);

    private static void DumpValue(StringBuilder sb, int indentation, object? value)
    {
        switch (value)
        {
            case QemuJsonObject o:
                foreach (var (k, v) in o.OrderedMembers) DumpMember(sb, indentation, k.Replace('-', ' '), v);
                break;
            case string text:
                sb.Append(text);
                break;
            case bool b:
                sb.Append(b ? "true" : "false");
                break;
            case System.Collections.IEnumerable list:
                int i = 0;
                foreach (var item in list) DumpMember(sb, indentation, $"[{i++}]", item);
                break;
            // Numbers by their own formatting: Convert.ToString(object) goes through IConvertible,
            // an interface call that costs every `vdisk info` a dispatch-cell resolution.
            case long n:
                sb.Append(n.ToString(CultureInfo.InvariantCulture));
                break;
            case int n:
                sb.Append(n.ToString(CultureInfo.InvariantCulture));
                break;
            case ulong n:
                sb.Append(n.ToString(CultureInfo.InvariantCulture));
                break;
            default:
                sb.Append(Convert.ToString(value, CultureInfo.InvariantCulture));
                break;
        }
    }

    private static void DumpMember(StringBuilder sb, int indentation, string key, object? value)
    {
        bool composite = IsComposite(value);
        sb.Append(' ', indentation * 4).Append(key).Append(':').Append(composite ? '\n' : ' ');
        DumpValue(sb, indentation + 1, value);
        if (!composite) sb.Append('\n');
    }

    /// <summary>bdrv_snapshot_dump's header line.</summary>
    public static string SnapshotHeaderLine => string.Format(CultureInfo.InvariantCulture, "{0,-10}{1,-17}{2,8}{3,20}{4,13}{5,11}", "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK", "ICOUNT");

    /// <summary>bdrv_snapshot_dump's line for one snapshot (date in local time, like QEMU).</summary>
    public static string SnapshotLine(SnapshotInfo snapshot)
    {
        var date = DateTimeOffset.FromUnixTimeSeconds(snapshot.DateSeconds).ToLocalTime().ToString("yyyy-MM-dd HH:mm:ss", CultureInfo.InvariantCulture);
        long clockNs = snapshot.VmClockNanoseconds;
        long secs = clockNs / 1_000_000_000;
        string clock = string.Format(CultureInfo.InvariantCulture, "{0:00}:{1:00}:{2:00}.{3:000}",
            secs / 3600, secs / 60 % 60, secs % 60, clockNs / 1_000_000 % 1000);
        return string.Format(CultureInfo.InvariantCulture, "{0,-9} {1,-16} {2,8}{3,20}{4,13}{5,11}",
            snapshot.Id, snapshot.Name, QemuText.SizeToStr(snapshot.VmStateSize), date, clock, snapshot.Icount?.ToString(CultureInfo.InvariantCulture) ?? "");
    }
}
