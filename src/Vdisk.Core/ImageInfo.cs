using System.Globalization;
using System.Text;
using Vdisk.Graph;

namespace Vdisk;

/// <summary>What <c>qemu-img info</c> reports about an image, and its two renderings.</summary>
public sealed class ImageInfo
{
    /// <summary>The filename as shown ("image:").</summary>
    public required string Filename { get; init; }

    /// <summary>Format driver name.</summary>
    public required string Format { get; init; }

    /// <summary>Guest-visible size in bytes.</summary>
    public required long VirtualSize { get; init; }

    /// <summary>Host bytes allocated, or null when unknown.</summary>
    public long? ActualSize { get; init; }

    /// <summary>Cluster size of formats that have one.</summary>
    public long? ClusterSize { get; init; }

    /// <summary>Where VM state would be stored (qcow2), else 0.</summary>
    public long VmStateOffset { get; init; }

    /// <summary>The dirty flag (always false for raw).</summary>
    public bool DirtyFlag { get; init; }

    /// <summary>False when the driver has no bdrv_get_info (nbd): JSON then has no "dirty-flag".</summary>
    public bool HasDirtyFlag { get; init; } = true;

    /// <summary>The backing file name as stored in the image, or null.</summary>
    public string? BackingFilename { get; init; }

    /// <summary>The backing file name resolved against the image's directory.</summary>
    public string? FullBackingFilename { get; init; }

    /// <summary>The backing file format the image names, or null.</summary>
    public string? BackingFormat { get; init; }

    /// <summary>Internal snapshots (empty when there are none).</summary>
    public IReadOnlyList<SnapshotInfo> Snapshots { get; init; } = [];

    /// <summary>The format-specific union's type ("qcow2"), or null when the format has none.</summary>
    public string? FormatSpecificType { get; init; }

    /// <summary>
    /// The format-specific data (QAPI names and values: string, bool, long, or lists of strings or
    /// of <see cref="Output.QemuJsonObject"/>), in QAPI order.
    /// </summary>
    public IReadOnlyList<KeyValuePair<string, object>> FormatSpecificData { get; init; } = [];

    /// <summary>
    /// The lines under "Format specific information:" as QEMU's dump_qobject prints them: QDict
    /// order, '-' shown as ' ', nested objects and lists indented by four spaces, list items as
    /// "[i]:". Empty when the format has no specific information.
    /// </summary>
    public string FormatSpecificText
    {
        get
        {
            if (FormatSpecificObject() is not { } data) return "";
            var sb = new StringBuilder();
            DumpValue(sb, 1, data);
            return sb.ToString();
        }
    }

    private static bool IsComposite(object? value) => value is Output.QemuJsonObject || (value is System.Collections.IEnumerable && value is not string);

    private static void DumpValue(StringBuilder sb, int indentation, object? value)
    {
        switch (value)
        {
            case Output.QemuJsonObject o:
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

    private Output.QemuJsonObject? FormatSpecificObject()
    {
        if (FormatSpecificType is null) return null;
        var data = new Output.QemuJsonObject();
        foreach (var (k, v) in FormatSpecificData) data.Add(k, v);
        return data;
    }

    /// <summary>Collects the information of the image whose top node is <paramref name="top"/>.</summary>
    public static ImageInfo Collect(BlockNode top) => top is IImageInfoSource source
        ? source.GetImageInfo()
        : new ImageInfo
        {
            Filename = top.Filename,
            Format = top.DriverName,
            VirtualSize = top.Length,
            ActualSize = top.AllocatedSize,
            HasDirtyFlag = top.HasDriverInfo,
        };

    /// <summary>qemu-img's size_to_str: three significant digits and a binary unit ("68 KiB", "1.05 MiB").</summary>
    public static string HumanSize(long value)
    {
        string[] suffixes = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
        int exponent = FrexpExponent(value / (1000.0 / 1024.0));
        int i = (exponent - 1) / 10;
        if (i < 0) i = 0;
        double div = Math.Pow(2, i * 10);
        return FormatG3(value / div) + " " + suffixes[i] + "B";
    }

    private static int FrexpExponent(double x)
    {
        if (x == 0) return 0;
        return Math.ILogB(x) + 1;
    }

    private static string FormatG3(double v)
    {
        // C's %0.3g: three significant digits, trailing zeros dropped.
        if (v == 0) return "0";
        int digitsBeforePoint = (int)Math.Floor(Math.Log10(Math.Abs(v))) + 1;
        int decimals = Math.Max(0, 3 - digitsBeforePoint);
        string s = Math.Round(v, decimals, MidpointRounding.ToEven).ToString("F" + decimals, CultureInfo.InvariantCulture);
        if (s.Contains('.')) s = s.TrimEnd('0').TrimEnd('.');
        return s;
    }

    /// <summary>The human output of qemu-img info.</summary>
    public string ToHuman()
    {
        var sb = new StringBuilder();
        sb.Append("image: ").Append(Filename).Append('\n');
        sb.Append("file format: ").Append(Format).Append('\n');
        sb.Append(CultureInfo.InvariantCulture, $"virtual size: {HumanSize(VirtualSize)} ({VirtualSize} bytes)\n");
        sb.Append("disk size: ").Append(ActualSize is long a ? HumanSize(a) : "unavailable").Append('\n');
        if (ClusterSize is long cs) sb.Append(CultureInfo.InvariantCulture, $"cluster_size: {cs}\n");
        if (DirtyFlag) sb.Append("cleanly shut down: no\n");
        if (BackingFilename is not null)
        {
            sb.Append("backing file: ").Append(BackingFilename);
            if (FullBackingFilename is null) sb.Append(" (cannot determine actual path)");
            else if (FullBackingFilename != BackingFilename) sb.Append(" (actual path: ").Append(FullBackingFilename).Append(')');
            sb.Append('\n');
            if (BackingFormat is not null) sb.Append("backing file format: ").Append(BackingFormat).Append('\n');
        }
        if (Snapshots.Count > 0)
        {
            sb.Append("Snapshot list:\n");
            sb.Append(SnapshotInfo.HeaderLine).Append('\n');
            foreach (var sn in Snapshots) sb.Append(sn.ToLine()).Append('\n');
        }
        if (FormatSpecificType is not null)
        {
            sb.Append("Format specific information:\n").Append(FormatSpecificText);
        }
        return sb.ToString();
    }

    /// <summary>The <c>--output=json</c> form, with qemu-img 7.2's keys and order.</summary>
    public string ToJson() => ToJsonObject().ToPrettyJson();

    /// <summary>The QAPI ImageInfo object (also used in arrays for --backing-chain).</summary>
    public Output.QemuJsonObject ToJsonObject()
    {
        var o = new Output.QemuJsonObject();
        o.Add("filename", Filename);
        o.Add("format", Format);
        if (HasDirtyFlag) o.Add("dirty-flag", DirtyFlag);
        if (ActualSize is long a) o.Add("actual-size", a);
        o.Add("virtual-size", VirtualSize);
        if (ClusterSize is long cs) o.Add("cluster-size", cs);
        if (BackingFilename is not null)
        {
            o.Add("backing-filename", BackingFilename);
            if (FullBackingFilename is not null) o.Add("full-backing-filename", FullBackingFilename);
            if (BackingFormat is not null) o.Add("backing-filename-format", BackingFormat);
        }
        if (Snapshots.Count > 0) o.Add("snapshots", Snapshots.Select(s => s.ToJsonObject()).ToList());
        if (FormatSpecificObject() is { } data)
            o.Add("format-specific", new Output.QemuJsonObject().Add("type", FormatSpecificType).Add("data", data));
        return o;
    }
}

/// <summary>One internal snapshot as qemu-img lists it.</summary>
/// <param name="Id">The id string.</param>
/// <param name="Name">The tag.</param>
/// <param name="VmStateSize">Saved VM state bytes.</param>
/// <param name="DateSeconds">Creation time (seconds since the epoch).</param>
/// <param name="DateNanoseconds">Creation time, nanoseconds part.</param>
/// <param name="VmClockNanoseconds">Guest clock at creation.</param>
/// <param name="Icount">Instruction count, when recorded.</param>
public sealed record SnapshotInfo(string Id, string Name, long VmStateSize, long DateSeconds, long DateNanoseconds, long VmClockNanoseconds, long? Icount)
{
    /// <summary>bdrv_snapshot_dump's header line.</summary>
    public static string HeaderLine => string.Format(CultureInfo.InvariantCulture, "{0,-10}{1,-17}{2,8}{3,20}{4,13}{5,11}", "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK", "ICOUNT");

    /// <summary>bdrv_snapshot_dump's line for this snapshot (date in local time, like QEMU).</summary>
    public string ToLine()
    {
        var date = DateTimeOffset.FromUnixTimeSeconds(DateSeconds).ToLocalTime().ToString("yyyy-MM-dd HH:mm:ss", CultureInfo.InvariantCulture);
        long secs = VmClockNanoseconds / 1_000_000_000;
        string clock = string.Format(CultureInfo.InvariantCulture, "{0:00}:{1:00}:{2:00}.{3:000}",
            secs / 3600, secs / 60 % 60, secs % 60, VmClockNanoseconds / 1_000_000 % 1000);
        return string.Format(CultureInfo.InvariantCulture, "{0,-9} {1,-16} {2,8}{3,20}{4,13}{5,11}",
            Id, Name, ImageInfo.HumanSize(VmStateSize), date, clock, Icount?.ToString(CultureInfo.InvariantCulture) ?? "");
    }

    /// <summary>QAPI SnapshotInfo.</summary>
    public Output.QemuJsonObject ToJsonObject()
    {
        var o = new Output.QemuJsonObject()
            .Add("id", Id).Add("name", Name).Add("vm-state-size", VmStateSize)
            .Add("date-sec", DateSeconds).Add("date-nsec", DateNanoseconds)
            .Add("vm-clock-sec", VmClockNanoseconds / 1_000_000_000).Add("vm-clock-nsec", VmClockNanoseconds % 1_000_000_000);
        if (Icount is long ic) o.Add("icount", ic);
        return o;
    }
}

/// <summary>Implemented by format nodes that report more than size and format.</summary>
public interface IImageInfoSource
{
    /// <summary>Builds the info of the image this node is the top of.</summary>
    ImageInfo GetImageInfo();
}
