namespace Vdisk.Locking;

/// <summary>
/// A permission could not be locked because another user of the image holds or refuses it,
/// or a lock syscall failed. <see cref="Exception.Message"/> is QEMU's text
/// (<c>Failed to get "write" lock</c>); <see cref="Hint"/> is QEMU's second line.
/// </summary>
public sealed class LockConflictException : IOException
{
    /// <summary>The file whose lock bytes were tested.</summary>
    public string Filename { get; }

    /// <summary>
    /// True when the failure came from testing a byte (another user holds a conflicting lock, or
    /// the test syscall failed): QEMU then adds <see cref="Hint"/>. False when taking or releasing
    /// a lock failed.
    /// </summary>
    public bool FromTest { get; }

    /// <summary>errno of a failed syscall, 0 for a plain conflict.</summary>
    public int Errno { get; }

    /// <summary>The lock byte whose test or lock failed.</summary>
    public int Offset { get; }

    /// <summary>QEMU's hint: <c>Is another process using the image [PATH]?</c></summary>
    public string Hint => $"Is another process using the image [{Filename}]?";

    /// <summary>Creates the exception.</summary>
    public LockConflictException(string message, string filename, int offset, bool fromTest, int errno = 0)
        : base(message)
    {
        Filename = filename;
        Offset = offset;
        FromTest = fromTest;
        Errno = errno;
    }
}
