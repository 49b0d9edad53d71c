using System.Globalization;
using Vdisk.Graph;
using Vdisk.Options;

namespace Vdisk.Drivers.Nbd;

/// <summary>
/// Options of the <c>nbd</c> protocol driver, as QEMU 7.2's nbd_process_options reads them:
/// <c>server.*</c> (a SocketAddress: unix path or inet host/port), the legacy
/// <c>host</c>/<c>port</c>/<c>path</c>, <c>export</c>, <c>reconnect-delay</c>,
/// <c>open-timeout</c>, <c>x-dirty-bitmap</c> and <c>tls-creds</c> (no TLS objects exist here).
/// </summary>
public sealed class NbdDriver : IBlockDriver, IProtocolFilenameParser
{
    /// <inheritdoc />
    public string Name => "nbd";

    /// <inheritdoc />
    public bool IsProtocol => true;

    /// <inheritdoc />
    public IReadOnlyList<string> Protocols => NbdFilename.Protocols;

    /// <inheritdoc />
    public void ParseFilename(string filename, OptionDict options) => NbdFilename.Parse(filename, options);

    /// <inheritdoc />
    public BlockNode Open(NodeOpenContext context)
    {
        var o = context.Options;
        string? host = o.TakeString("host");
        string? port = o.TakeString("port");
        string? path = o.TakeString("path");
        string? export = o.TakeString("export");
        string? tlsCreds = o.TakeString("tls-creds");
        o.TakeString("tls-hostname");
        string? dirtyBitmap = o.TakeString("x-dirty-bitmap");
        ulong reconnectDelay = TakeNumber(o, "reconnect-delay");
        ulong openTimeout = TakeNumber(o, "open-timeout");
        var server = o.TakeDict("server");

        // nbd_process_legacy_socket_options
        if (path is not null || host is not null || port is not null)
        {
            if (server is not null) throw new OptionException("Cannot use 'server' and path/host/port at the same time");
            if (path is not null && host is not null) throw new OptionException("path and host may not be used at the same time");
            if (path is not null && port is not null) throw new OptionException("port may not be used without host");
            server = new OptionDict();
            if (path is not null)
            {
                server.Set("type", "unix");
                server.Set("path", path);
            }
            else if (host is not null)
            {
                server.Set("type", "inet");
                server.Set("host", host);
                server.Set("port", port ?? NbdWire.DefaultPort);
            }
        }
        if (server is null || server.Count == 0) throw new OptionException("NBD server address missing");
        var address = ParseAddress(server);
        if (export is not null && export.Length > NbdWire.MaxStringSize) throw new OptionException("export name too long to send to server");
        if (tlsCreds is not null) throw new OptionException($"No TLS credentials with id '{tlsCreds}'");
        if (dirtyBitmap is not null && dirtyBitmap.Length > NbdWire.MaxStringSize)
            throw new OptionException("x-dirty-bitmap query too long to send to server");

        var options = new NbdConnectOptions
        {
            Address = address,
            Export = export,
            ReconnectDelay = TimeSpan.FromSeconds(reconnectDelay),
            OpenTimeout = TimeSpan.FromSeconds(openTimeout),
            MetaContext = dirtyBitmap ?? "base:allocation",
        };
        var node = NbdNode.OpenAsync(context.NodeName, context.Flags, options).GetAwaiter().GetResult();
        try
        {
            if (dirtyBitmap is not null && !node.HasBlockStatus)
                throw new OptionException($"requested x-dirty-bitmap {dirtyBitmap} not found");
            // QEMU reports options no driver took only after the open, so a bad option still connects first.
            o.EnsureAllUsed(Name, isProtocol: true);
        }
        catch
        {
            CloseAfterFailure(node);
            throw;
        }
        return node;
    }

    private static void CloseAfterFailure(NbdNode node) => node.CloseAsync().AsTask().GetAwaiter().GetResult();

    /// <summary>QEMU_OPT_NUMBER: an unsigned decimal.</summary>
    private static ulong TakeNumber(NodeOptions o, string key)
    {
        string? text = o.TakeString(key);
        if (text is null) return 0;
        if (!ulong.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out ulong value))
            throw new OptionException($"Parameter '{key}' expects a number");
        return value;
    }

    /// <summary>visit_type_SocketAddress over the flat <c>server.*</c> keys, with QAPI's messages.</summary>
    private static NbdServerAddress ParseAddress(OptionDict server)
    {
        var s = new NodeOptions(server);
        string type = s.TakeString("type") ?? throw new OptionException("Parameter 'type' is missing");
        NbdServerAddress address;
        switch (type)
        {
            case "unix":
            {
                string path = s.TakeString("path") ?? throw new OptionException("Parameter 'path' is missing");
                s.TakeBool("abstract");
                s.TakeBool("tight");
                address = NbdServerAddress.Unix(path);
                break;
            }
            case "inet":
            {
                string host = s.TakeString("host") ?? throw new OptionException("Parameter 'host' is missing");
                string port = s.TakeString("port") ?? throw new OptionException("Parameter 'port' is missing");
                s.TakeBool("numeric");
                s.TakeString("to");
                s.TakeBool("ipv4");
                s.TakeBool("ipv6");
                s.TakeBool("keep-alive");
                s.TakeBool("mptcp");
                address = NbdServerAddress.Inet(host, port);
                break;
            }
            case "fd":
            case "vsock":
                throw new OptionException($"vdisk cannot connect to an NBD server of address type '{type}'");
            default:
                throw new OptionException($"Parameter 'type' does not accept value '{type}'");
        }
        foreach (var key in s.Unused) throw new OptionException($"Parameter '{key}' is unexpected");
        return address;
    }
}
