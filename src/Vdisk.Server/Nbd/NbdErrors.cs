using System.Net.Sockets;
using Vdisk.Native;

namespace Vdisk.Server.Nbd;

/// <summary>Why a request is answered with an error: the NBD error number and the message.</summary>
internal readonly record struct NbdRefusal(NbdError Error, string Message);

/// <summary>Which failures are answers (I/O errors) and which are faults, and their NBD numbers.</summary>
internal static class NbdErrors
{
    /// <summary>
    /// The answer to a failed operation below an export (QEMU's system_errno_to_nbd_errno), or
    /// null when the failure is a fault nobody foresaw (a bug), which breaks the connection.
    /// </summary>
    public static NbdRefusal? Describe(Exception e) => e switch
    {
        NativeIOException n => new(ToNbdError(n.Errno), n.Message),
        IOException io => new(NbdError.IO, io.Message),
        OutOfMemoryException => new(NbdError.NoMemory, "Cannot allocate memory"),
        ObjectDisposedException => new(NbdError.Shutdown, "Server shutting down"),
        _ => null,
    };

    /// <summary>The NBD error number for a host errno.</summary>
    public static NbdError ToNbdError(int errno) => errno switch
    {
        0 => NbdError.None,
        Errno.EPERM or Errno.EROFS => NbdError.Perm,
        Errno.EIO => NbdError.IO,
        Errno.ENOMEM => NbdError.NoMemory,
        Errno.ENOSPC or Errno.EFBIG => NbdError.NoSpace,
        75 => NbdError.Overflow,
        Errno.ENOTSUP => NbdError.NotSupported,
        108 => NbdError.Shutdown,
        _ => NbdError.Invalid,
    };

    /// <summary>
    /// True for what ends a connection in the ordinary way: the client went away (end of
    /// stream, socket errors) or the connection was told to stop (cancellation of its token).
    /// </summary>
    public static bool IsDisconnect(Exception e, CancellationToken stopping) =>
        e is EndOfStreamException or SocketException or IOException or ObjectDisposedException ||
        (e is OperationCanceledException && stopping.IsCancellationRequested);

    /// <summary>An exception on one line, for the log.</summary>
    public static string OneLine(Exception e) => $"{e.GetType().Name}: {e.Message}".ReplaceLineEndings(" ");
}

/// <summary>
/// A request being served. It is answered exactly once: by its handler, or, if the connection
/// breaks first, with EIO by <see cref="NbdConnection.Break"/>.
/// </summary>
internal sealed class NbdPendingRequest(NbdRequest request)
{
    private int _answered;

    public NbdRequest Request { get; } = request;

    /// <summary>Takes the right to answer; false when someone already answered.</summary>
    public bool TryClaimReply() => Interlocked.Exchange(ref _answered, 1) == 0;
}
