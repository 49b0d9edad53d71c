using System.Net.Sockets;
using Vdisk.Locking;
using Vdisk.Native;

namespace Vdisk.Server.Daemon;

/// <summary>
/// A bound, listening socket. Unix sockets are made mode 0600 before they listen (so nobody
/// else can connect even for an instant), a stale socket left by a dead process is replaced,
/// a live one or any other file is never touched, and the socket file is removed on disposal
/// if it is still the one this listener created.
/// </summary>
public sealed class SocketListener : IDisposable
{
    private readonly FileIdentity? _socketFile;
    private readonly Lock _disposing = new();
    private bool _disposed;

    private SocketListener(Socket socket, ListenAddress address, FileIdentity? socketFile)
    {
        Socket = socket;
        Address = address;
        _socketFile = socketFile;
    }

    /// <summary>The listening socket.</summary>
    public Socket Socket { get; }

    /// <summary>Where it listens.</summary>
    public ListenAddress Address { get; }

    /// <summary>Binds and listens, with QEMU's messages on failure.</summary>
    /// <exception cref="DaemonException">The address cannot be bound.</exception>
    public static SocketListener Listen(ListenAddress address, int backlog = 64) => address switch
    {
        UnixListenAddress unix => ListenUnix(unix, backlog),
        InetListenAddress inet => ListenInet(inet, backlog),
        _ => throw new ArgumentOutOfRangeException(nameof(address)),
    };

    private static SocketListener ListenUnix(UnixListenAddress address, int backlog)
    {
        string path = address.Path;
        ReplaceStaleSocket(path);
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            socket.Bind(new UnixDomainSocketEndPoint(path));
            // Before listen(): until then connections are refused, so no one gets in meanwhile.
            File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
            socket.Listen(backlog);
        }
        catch (Exception e) when (e is SocketException or IOException or UnauthorizedAccessException or ArgumentException)
        {
            socket.Dispose();
            // .NET reports a missing directory as "address not available"; say what bind(2) said.
            string parent = Path.GetDirectoryName(Path.GetFullPath(path)) ?? "/";
            string reason = Directory.Exists(parent) ? Describe(e) : "No such file or directory";
            throw new DaemonException($"Failed to bind socket to {path}: {reason}");
        }
        return new SocketListener(socket, address, FileSystemEntry.IdentityOf(path));
    }

    /// <summary>Removes a socket file nobody listens on; refuses a live socket or another kind of file.</summary>
    private static void ReplaceStaleSocket(string path)
    {
        var kind = FileSystemEntry.KindOf(path);
        if (kind == FileSystemEntryKind.Missing) return;
        if (kind != FileSystemEntryKind.Socket) throw new DaemonException($"Failed to bind socket to {path}: Address already in use");
        using var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            probe.Connect(new UnixDomainSocketEndPoint(path));
        }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionRefused)
        {
            File.Delete(path);
            return;
        }
        catch (SocketException)
        {
            return;
        }
        throw new DaemonException($"Failed to bind socket to {path}: Address already in use");
    }

    private static SocketListener ListenInet(InetListenAddress address, int backlog)
    {
        var endpoint = address.Resolve();
        var socket = new Socket(endpoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            socket.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
            socket.Bind(endpoint);
            socket.Listen(backlog);
        }
        catch (SocketException e)
        {
            socket.Dispose();
            throw new DaemonException($"Failed to bind socket: {Describe(e)}");
        }
        return new SocketListener(socket, address, null);
    }

    private static string Describe(Exception e) => e switch
    {
        SocketException s when s.SocketErrorCode == SocketError.AddressAlreadyInUse => "Address already in use",
        SocketException s when s.SocketErrorCode == SocketError.AccessDenied => "Permission denied",
        SocketException s when s.SocketErrorCode == SocketError.AddressNotAvailable => "Cannot assign requested address",
        _ => e.Message,
    };

    /// <summary>
    /// Closes the socket and removes its file if it is still ours. A second caller waits until
    /// the first is done: a daemon stopping on a signal disposes from the signal's thread while
    /// its main thread, woken from accept(2), goes on to exit.
    /// </summary>
    public void Dispose()
    {
        lock (_disposing)
        {
            if (_disposed) return;
            _disposed = true;
            Socket.Dispose();
            if (Address is UnixListenAddress unix && _socketFile is { } mine && FileSystemEntry.IdentityOf(unix.Path) == mine)
            {
                try
                {
                    File.Delete(unix.Path);
                }
                catch (IOException) { }
            }
        }
    }
}
