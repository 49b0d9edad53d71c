using System.Globalization;
using System.Text;
using System.Text.Json;
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

    /// <summary>Human lines under "Format specific information:".</summary>
    public IReadOnlyList<KeyValuePair<string, string>> FormatSpecific { get; init; } = [];

    /// <summary>Collects the information of the image whose top node is <paramref name="top"/>.</summary>
    public static ImageInfo Collect(BlockNode top) => top is IImageInfoSource source
        ? source.GetImageInfo()
        : new ImageInfo
        {
            Filename = top.Filename,
            Format = top.DriverName,
            VirtualSize = top.Length,
            ActualSize = top.AllocatedSize,
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
        if (FormatSpecific.Count > 0)
        {
            sb.Append("Format specific information:\n");
            foreach (var (k, v) in FormatSpecific) sb.Append("    ").Append(k).Append(": ").Append(v).Append('\n');
        }
        return sb.ToString();
    }

    /// <summary>The <c>--output=json</c> form, with qemu-img 7.2's keys and order.</summary>
    public string ToJson()
    {
        using var stream = new MemoryStream();
        using (var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true, IndentSize = 4 }))
        {
            WriteJson(w);
        }
        return Encoding.UTF8.GetString(stream.ToArray());
    }

    /// <summary>Writes the JSON object (also used inside arrays for --backing-chain).</summary>
    public void WriteJson(Utf8JsonWriter w)
    {
        w.WriteStartObject();
        w.WriteNumber("virtual-size", VirtualSize);
        w.WriteString("filename", Filename);
        if (ClusterSize is long cs) w.WriteNumber("cluster-size", cs);
        w.WriteString("format", Format);
        if (ActualSize is long a) w.WriteNumber("actual-size", a);
        w.WriteBoolean("dirty-flag", DirtyFlag);
        w.WriteEndObject();
    }
}

/// <summary>Implemented by format nodes that report more than size and format.</summary>
public interface IImageInfoSource
{
    /// <summary>Builds the info of the image this node is the top of.</summary>
    ImageInfo GetImageInfo();
}
