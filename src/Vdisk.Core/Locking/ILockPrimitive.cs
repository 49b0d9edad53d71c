namespace Vdisk.Locking;

/// <summary>
/// The three byte-range operations QEMU's lock transaction is built from. Implementations:
/// OFD locks on one descriptor, guarded POSIX locks, or a recorder in tests.
/// </summary>
public interface ILockPrimitive
{
    /// <summary>Takes a shared (F_RDLCK) lock on one byte. Throws <see cref="Native.NativeIOException"/> on failure.</summary>
    void LockShared(int offset);

    /// <summary>Releases this owner's lock on one byte.</summary>
    void Unlock(int offset);

    /// <summary>
    /// True when someone other than this owner holds a lock on the byte that would conflict with
    /// an exclusive lock (GETLK with F_WRLCK). Throws on syscall failure.
    /// </summary>
    bool IsLockedByOthers(int offset);
}
