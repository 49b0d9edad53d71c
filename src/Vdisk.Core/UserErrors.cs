using Vdisk.Options;

namespace Vdisk;

/// <summary>
/// A failure whose message is meant for the user, worded as QEMU words it. The library's own
/// expected failures are <see cref="IOException"/>s (I/O, locks, permissions, formats) or
/// <see cref="OptionException"/>s; the tools' derive from this class.
/// </summary>
public class UserFacingException(string message) : Exception(message);

/// <summary>
/// The one list of expected failures, shared by the CLI and the daemon: each gets its one-line
/// message (QEMU's words); anything else is a bug and keeps its stack trace.
/// </summary>
public static class UserErrors
{
    /// <summary>The user-facing line of an expected failure, or null when <paramref name="e"/> is a bug.</summary>
    public static string? Message(Exception e) => e switch
    {
        OptionException or UserFacingException => e.Message,
        IOException => e.Message,                 // NativeIOException, LockConflictException, PermissionConflictException, ...
        UnauthorizedAccessException => e.Message, // an open refused by the kernel's permission check
        _ => null,
    };

    /// <summary>
    /// <see cref="Message"/>, with a lock conflict's holder on the same line when known: the
    /// daemon's errors are one line (QMP's desc); the CLI prints the holder under QEMU's hint instead.
    /// </summary>
    public static string? MessageNamingHolder(Exception e) =>
        e is Locking.LockConflictException { HeldBy: { } holder } conflict ? $"{conflict.Message}, {holder}" : Message(e);
}
