using System.Net;
using System.Net.Sockets;
using System.Text;
using Vdisk.Native;

namespace Vdisk.Drivers.Nbd;

/// <summary>Where the NBD server listens (QEMU's SocketAddress, unix and inet branches).</summary>
public sealed record NbdServerAddress
{
    private NbdServerAddress(string? path, string? host, string? port)
    {
        Path = path;
        Host = host;
        Port = port;
    }

    /// <summary>The Unix socket path, or null for TCP.</summary>
    public string? Path { get; }

    /// <summary>The TCP host, or null for a Unix socket.</summary>
    public string? Host { get; }

    /// <summary>The TCP port as given (a string, as in QAPI).</summary>
    public string? Port { get; }

    /// <summary>True for a Unix socket.</summary>
    public bool IsUnix => Path is not null;

    /// <summary>A Unix socket address.</summary>
    public static NbdServerAddress Unix(string path) => new(path, null, null);

    /// <summary>A TCP address.</summary>
    public static NbdServerAddress Inet(string host, string port) => new(null, host, port);

    /// <summary>How QEMU names the address in "Failed to connect to '...'".</summary>
    public override string ToString() => IsUnix ? Path! : $"{Host}:{Port}";

    /// <summary>
    /// Connects like QEMU's socket_connect: every address the host resolves to in turn, the error
    /// of the last one reported with QEMU's wording.
    /// </summary>
    /// <exception cref="NativeIOException">Resolution or connection failed.</exception>
    public async Task<Socket> ConnectAsync(CancellationToken cancellationToken)
    {
        if (IsUnix)
        {
            // sun_path holds 108 bytes including the terminating NUL.
            if (Encoding.UTF8.GetByteCount(Path!) >= 108)
                throw new NativeIOException(Errno.EINVAL, $"UNIX socket path '{Path}' is too long\nPath must be less than 108 bytes");
            if (Path!.Length == 0)
                throw new NativeIOException(ECONNREFUSED, $"Failed to connect to '': {LibC.StrError(ECONNREFUSED)}");
            var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            try
            {
                await socket.ConnectAsync(new UnixDomainSocketEndPoint(Path), cancellationToken).ConfigureAwait(false);
                return socket;
            }
            catch (SocketException e)
            {
                socket.Dispose();
                throw ConnectFailed(e);
            }
        }

        if (!ushort.TryParse(Port, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out ushort port))
            throw new NativeIOException(Errno.EINVAL, $"address resolution failed for {Host}:{Port}: Servname not supported for ai_socktype");
        IPAddress[] addresses;
        if (IPAddress.TryParse(Host, out var literal))
        {
            addresses = [literal];
        }
        else
        {
            try
            {
                addresses = Host!.Length == 0 ? [] : await Dns.GetHostAddressesAsync(Host, cancellationToken).ConfigureAwait(false);
            }
            catch (SocketException)
            {
                addresses = [];
            }
            if (addresses.Length == 0)
                throw new NativeIOException(Errno.EINVAL, $"address resolution failed for {Host}:{Port}: Name or service not known");
        }
        SocketException? last = null;
        foreach (var address in addresses)
        {
            var socket = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            try
            {
                await socket.ConnectAsync(new IPEndPoint(address, port), cancellationToken).ConfigureAwait(false);
                return socket;
            }
            catch (SocketException e)
            {
                socket.Dispose();
                last = e;
            }
        }
        throw ConnectFailed(last!);
    }

    private const int ECONNREFUSED = 111;

    private NativeIOException ConnectFailed(SocketException e)
    {
        // .NET folds ENOENT of a Unix connect into AddressNotAvailable (EADDRNOTAVAIL).
        int errno = IsUnix && e.SocketErrorCode == SocketError.AddressNotAvailable ? Errno.ENOENT
            : e.NativeErrorCode > 0 ? e.NativeErrorCode : Errno.EIO;
        return new NativeIOException(errno, $"Failed to connect to '{this}': {LibC.StrError(errno)}");
    }
}
