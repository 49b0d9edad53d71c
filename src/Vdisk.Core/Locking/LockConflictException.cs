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

    /// <summary>Holders and waiting known to the lock primitive (cluster locks), or null (local locks).</summary>
    public LockConflictDetail? Detail { get; init; }

    /// <summary>
    /// vdisk's line after the hint when the holder is known: <c>held by host B, pid 1234 (vdisk serve)</c>; null otherwise.
    /// </summary>
    public string? HeldBy => Detail is { Holders.Count: > 0 } d ? "held by " + d.Holders[0].Describe() : null;

    /// <summary>The hint, followed by <see cref="HeldBy"/> on its own line when known.</summary>
    public string HintWithHolder => HeldBy is { } held ? Hint + "\n" + held : Hint;

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

/// <summary>
/// What a primitive knows about a conflict beyond QEMU's message: the holders (for cluster locks,
/// with host and PID), and how to wait until they change instead of polling.
/// </summary>
/// <param name="Holders">The holders of the conflicting byte, the first named in messages.</param>
/// <param name="WaitForChange">Completes when the lock state may have changed (an etcd watch); null to poll.</param>
public sealed record LockConflictDetail(IReadOnlyList<Inspection.LockHolder> Holders, Func<CancellationToken, Task>? WaitForChange = null);
