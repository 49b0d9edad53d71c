using Vdisk.Graph;

namespace Vdisk;

/// <summary>What <c>qemu-img info</c> reports about an image (QAPI ImageInfo); the tools render it as text.</summary>
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

    /// <summary>True for an encrypted image (bs->encrypted): "encrypted: yes".</summary>
    public bool Encrypted { get; init; }

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
    public List<SnapshotInfo> Snapshots { get; init; } = [];

    /// <summary>The format-specific union's type ("qcow2"), or null when the format has none.</summary>
    public string? FormatSpecificType { get; init; }

    /// <summary>
    /// The format-specific data (QAPI names and values: string, bool, long, or lists of strings or
    /// of <see cref="Output.QemuJsonObject"/>), in QAPI order.
    /// </summary>
    public List<KeyValuePair<string, object>> FormatSpecificData { get; init; } = [];

    /// <summary>The format-specific data as one object in QAPI order, or null when the format has none.</summary>
    public Output.QemuJsonObject? FormatSpecificObject()
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
        if (Encrypted) o.Add("encrypted", true);
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
