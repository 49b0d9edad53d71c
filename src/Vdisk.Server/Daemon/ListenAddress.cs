using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace Vdisk.Server.Daemon;

/// <summary>Where a listening socket is bound: a unix socket path or a TCP host and port.</summary>
public abstract record ListenAddress
{
    /// <summary>The address as a user wrote it (for messages).</summary>
    public abstract string Display { get; }
}

/// <summary>A unix domain socket, created with mode 0600.</summary>
/// <param name="Path">The socket's path.</param>
public sealed record UnixListenAddress(string Path) : ListenAddress
{
    /// <inheritdoc />
    public override string Display => Path;
}

/// <summary>A TCP socket. Only ever used when asked for explicitly.</summary>
/// <param name="Host">Host name or address; vdisk binds loopback when none is given.</param>
/// <param name="Port">Port, as text (QAPI's InetSocketAddress has it as a string).</param>
public sealed record InetListenAddress(string Host, string Port) : ListenAddress
{
    /// <summary>The host bound when the user gives none.</summary>
    public const string DefaultHost = "127.0.0.1";

    /// <inheritdoc />
    public override string Display => $"{Host}:{Port}";

    /// <summary>Resolves to an endpoint, with QEMU's message when that fails.</summary>
    public IPEndPoint Resolve()
    {
        if (!ushort.TryParse(Port, NumberStyles.None, CultureInfo.InvariantCulture, out ushort port))
            throw new DaemonException($"address resolution failed for {Host}:{Port}: Servname not supported for ai_socktype");
        if (IPAddress.TryParse(Host.Trim('[', ']'), out var ip)) return new IPEndPoint(ip, port);
        try
        {
            var addresses = Dns.GetHostAddresses(Host);
            var chosen = addresses.FirstOrDefault(a => a.AddressFamily == AddressFamily.InterNetwork) ?? addresses.FirstOrDefault()
                ?? throw new DaemonException($"address resolution failed for {Host}:{Port}: Name or service not known");
            return new IPEndPoint(chosen, port);
        }
        catch (SocketException e)
        {
            throw new DaemonException($"address resolution failed for {Host}:{Port}: {e.Message}");
        }
    }
}
