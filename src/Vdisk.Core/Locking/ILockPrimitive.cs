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

/// <summary>
/// A primitive whose lock and unlock calls are collected and carried out together (cluster
/// locks: one etcd transaction for a whole step instead of one request per byte), and which
/// knows who holds a byte it reported as locked. The transaction calls <see cref="Flush"/> at
/// the end of every step; the first test after lock calls carries them out and reads the others'
/// locks in the same atomic step, so "lock, then test" keeps its meaning.
/// </summary>
public interface IBatchedLockPrimitive : ILockPrimitive
{
    /// <summary>Carries out the lock and unlock calls made since the last flush.</summary>
    void Flush();

    /// <summary>Who holds <paramref name="offset"/> after <see cref="ILockPrimitive.IsLockedByOthers"/> returned true; null when not known.</summary>
    LockConflictDetail? Conflict(int offset);
}
