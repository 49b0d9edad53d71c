using System.Globalization;
using Vdisk.Options;
using Vdisk.Server.Qmp;

namespace Vdisk.Server.Daemon;

/// <summary>What <c>--export</c> and block-export-add ask for, read from checked options.</summary>
/// <param name="Id">The export id.</param>
/// <param name="NodeName">The node to export.</param>
/// <param name="Name">The NBD name (default: the node name).</param>
/// <param name="Description">The NBD description, or null.</param>
/// <param name="Writable">Clients may write.</param>
/// <param name="ShareRw">vdisk's share-rw=on: admit other writers (raw images).</param>
/// <param name="AllocationDepth">Offer the qemu:allocation-depth metadata context.</param>
/// <param name="Bitmaps">Dirty bitmaps of the node (or its backing chain) offered as qemu:dirty-bitmap:NAME contexts.</param>
/// <param name="Fuse">The FUSE variant's options for <c>type=fuse</c>; null for NBD.</param>
public sealed record ExportRequest(string Id, string NodeName, string Name, string? Description, bool Writable, bool ShareRw, bool AllocationDepth = false,
    IReadOnlyList<string>? Bitmaps = null, FuseExportRequest? Fuse = null)
{
    /// <summary>Reads options already checked against <see cref="QmpSchema.BlockExportOptions"/>.</summary>
    public static ExportRequest From(OptionDict o)
    {
        string nodeName = Text(o, "node-name")!;
        var bitmaps = new List<string>();
        if (o["bitmaps"] is OptionList list)
            foreach (var item in list.Items)
                bitmaps.Add(item is OptionScalar { Kind: ScalarKind.String } s ? s.Text
                    : throw new DaemonException("Parameter 'bitmaps' takes bitmap names of the exported node (vdisk serve)"));
        if (Text(o, "iothread") is not null)
            throw new DaemonException("Parameter 'iothread' is not supported by vdisk serve");
        FuseExportRequest? fuse = Text(o, "type") == "fuse"
            ? new FuseExportRequest(Text(o, "mountpoint")!, Flag(o, "growable") ?? false, Text(o, "allow-other") ?? "auto")
            : null;
        return new ExportRequest(Text(o, "id")!, nodeName, Text(o, "name") ?? nodeName, Text(o, "description"),
            Flag(o, "writable") ?? false, Flag(o, "share-rw") ?? false, Flag(o, "allocation-depth") ?? false, bitmaps, fuse);
    }

    internal static string? Text(OptionDict o, string key) => o[key] is OptionScalar { Kind: not ScalarKind.Null } s ? s.Text : null;

    internal static bool? Flag(OptionDict o, string key) => o[key] is OptionScalar { Kind: ScalarKind.Bool } s ? s.Text == "true" : null;
}

/// <summary>BlockExportOptionsFuse: where to mount, whether writes past the end grow the image, and allow_other (on, off, auto).</summary>
/// <param name="Mountpoint">An existing regular file to mount over.</param>
/// <param name="Growable">Writes past the end grow the image.</param>
/// <param name="AllowOther">FuseExportAllowOther: <c>on</c>, <c>off</c> or <c>auto</c>.</param>
public sealed record FuseExportRequest(string Mountpoint, bool Growable, string AllowOther);

/// <summary>What <c>--nbd-server</c> and nbd-server-start ask for.</summary>
/// <param name="Address">Where to listen.</param>
/// <param name="MaxConnections">Connection limit; 0 for none.</param>
public sealed record NbdServerRequest(ListenAddress Address, uint MaxConnections)
{
    /// <summary>Reads options checked against <see cref="QmpSchema.NbdServerOptions"/> (flat) or <see cref="QmpSchema.NbdServerStart"/> (legacy).</summary>
    public static NbdServerRequest From(OptionDict o, bool legacyAddress)
    {
        var addr = (OptionDict)o["addr"]!;
        if (legacyAddress) addr = Merge(addr);
        if (ExportRequest.Text(o, "tls-creds") is { } creds)
            throw new DaemonException($"No TLS credentials with id '{creds}'");
        uint max = ExportRequest.Text(o, "max-connections") is { } m ? uint.Parse(m, CultureInfo.InvariantCulture) : 0;
        return new NbdServerRequest(ListenAddressOf(addr), max);
    }

    /// <summary>SocketAddressLegacy's <c>{"type": T, "data": {...}}</c> as the flat form.</summary>
    private static OptionDict Merge(OptionDict legacy)
    {
        var flat = ((OptionDict)legacy["data"]!).Clone();
        flat.Set("type", legacy["type"]!);
        return flat;
    }

    /// <summary>A listening address from a checked SocketAddress.</summary>
    public static ListenAddress ListenAddressOf(OptionDict addr)
    {
        string type = ExportRequest.Text(addr, "type")!;
        return type switch
        {
            "unix" when ExportRequest.Flag(addr, "abstract") == true => throw new DaemonException("Abstract unix sockets are not supported by vdisk serve"),
            "unix" => new UnixListenAddress(ExportRequest.Text(addr, "path")!),
            "inet" => new InetListenAddress(ExportRequest.Text(addr, "host") ?? InetListenAddress.DefaultHost, ExportRequest.Text(addr, "port")!),
            _ => throw new DaemonException($"Socket address type '{type}' is not supported by vdisk serve"),
        };
    }
}
