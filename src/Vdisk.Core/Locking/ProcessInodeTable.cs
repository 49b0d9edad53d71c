using Microsoft.Win32.SafeHandles;
using Vdisk.Native;

namespace Vdisk.Locking;

/// <summary>Identifies a file by device and inode: locks are per inode, not per path.</summary>
public readonly record struct FileIdentity(uint DevMajor, uint DevMinor, ulong Inode)
{
    /// <summary>The form /proc/locks uses: <c>fe:00:11657375</c> (hex device numbers).</summary>
    public override string ToString() => $"{DevMajor:x2}:{DevMinor:x2}:{Inode}";

    /// <summary>The device and inode <paramref name="path"/> refers to, following symbolic links (stat, not lstat).</summary>
    /// <exception cref="NativeIOException">stat failed; the message is strerror's text.</exception>
    public static unsafe FileIdentity OfPath(string path)
    {
        StatXBuffer st;
        if (LibC.StatX(path, 0, &st) != 0) throw LibC.LastErrorException(null, path);
        return new FileIdentity(st.DevMajor, st.DevMinor, st.Inode);
    }
}

/// <summary>
/// Every image descriptor this process has open, per inode, and the POSIX lock bytes each node
/// holds. POSIX locks belong to the process and vanish when any descriptor of the file closes,
/// which is QEMU's documented weakness ("locks can be lost unexpectedly"). Here every close goes
/// through this table: while a node still holds POSIX locks on the inode, other descriptors of
/// that inode are kept open and closed only when the last POSIX holder leaves. The table also
/// gives POSIX mode what OFD has for free: conflicts between two nodes of one process.
/// </summary>
internal static class ProcessInodeTable
{
    private static readonly object s_gate = new();
    private static readonly Dictionary<FileIdentity, InodeEntry> s_entries = new();

    private sealed class InodeEntry
    {
        public int OpenHandles;
        public readonly List<PosixLockPrimitive> Owners = new();
        public readonly Dictionary<int, int> ByteHolders = new();
        public readonly List<SafeFileHandle> Deferred = new();
        public bool HasPosixLocks => ByteHolders.Count > 0;
    }

    /// <summary>Records a newly opened descriptor of <paramref name="id"/>.</summary>
    public static void Opened(FileIdentity id)
    {
        lock (s_gate)
        {
            Entry(id).OpenHandles++;
        }
    }

    /// <summary>
    /// Closes <paramref name="handle"/> unless this process still holds POSIX locks on the inode,
    /// in which case the close is deferred until the last of them is released.
    /// </summary>
    public static void Close(FileIdentity id, SafeFileHandle handle)
    {
        lock (s_gate)
        {
            var entry = Entry(id);
            entry.OpenHandles--;
            if (entry.HasPosixLocks)
            {
                entry.Deferred.Add(handle);
                return;
            }
            handle.Dispose();
            DrainIfIdle(id, entry);
        }
    }

    public static PosixLockPrimitive RegisterPosixOwner(FileIdentity id, SafeFileHandle handle)
    {
        lock (s_gate)
        {
            var owner = new PosixLockPrimitive(id, handle);
            Entry(id).Owners.Add(owner);
            return owner;
        }
    }

    public static void UnregisterPosixOwner(PosixLockPrimitive owner)
    {
        lock (s_gate)
        {
            var entry = Entry(owner.Id);
            foreach (int offset in owner.HeldBytes.ToArray()) UnlockLocked(entry, owner, offset);
            entry.Owners.Remove(owner);
            DrainIfIdle(owner.Id, entry);
        }
    }

    public static void Lock(PosixLockPrimitive owner, int offset)
    {
        lock (s_gate)
        {
            var entry = Entry(owner.Id);
            if (owner.HeldBytes.Contains(offset)) return;
            entry.ByteHolders.TryGetValue(offset, out int holders);
            if (holders == 0)
                FcntlByteLock.Set(owner.Handle, LibC.F_SETLK, LibC.F_RDLCK, offset);
            entry.ByteHolders[offset] = holders + 1;
            owner.HeldBytes.Add(offset);
        }
    }

    public static void Unlock(PosixLockPrimitive owner, int offset)
    {
        lock (s_gate)
        {
            UnlockLocked(Entry(owner.Id), owner, offset);
        }
    }

    public static bool IsLockedByOthers(PosixLockPrimitive owner, int offset)
    {
        lock (s_gate)
        {
            var entry = Entry(owner.Id);
            foreach (var other in entry.Owners)
                if (!ReferenceEquals(other, owner) && other.HeldBytes.Contains(offset)) return true;
            // F_GETLK does not report this process's own POSIX locks, only other processes'.
            return FcntlByteLock.Test(owner.Handle, LibC.F_GETLK, offset);
        }
    }

    private static void UnlockLocked(InodeEntry entry, PosixLockPrimitive owner, int offset)
    {
        if (!owner.HeldBytes.Remove(offset)) return;
        int holders = entry.ByteHolders[offset] - 1;
        if (holders == 0)
        {
            entry.ByteHolders.Remove(offset);
            FcntlByteLock.Set(owner.Handle, LibC.F_SETLK, LibC.F_UNLCK, offset);
        }
        else
        {
            entry.ByteHolders[offset] = holders;
        }
    }

    private static void DrainIfIdle(FileIdentity id, InodeEntry entry)
    {
        if (entry.HasPosixLocks) return;
        foreach (var h in entry.Deferred) h.Dispose();
        entry.Deferred.Clear();
        if (entry.OpenHandles == 0 && entry.Owners.Count == 0) s_entries.Remove(id);
    }

    private static InodeEntry Entry(FileIdentity id)
    {
        if (!s_entries.TryGetValue(id, out var entry))
        {
            entry = new InodeEntry();
            s_entries[id] = entry;
        }
        return entry;
    }
}

/// <summary>POSIX (process-wide) locks, reference-counted per byte across the nodes of this process.</summary>
internal sealed class PosixLockPrimitive : ILockPrimitive
{
    internal PosixLockPrimitive(FileIdentity id, SafeFileHandle handle)
    {
        Id = id;
        Handle = handle;
    }

    internal FileIdentity Id { get; }
    internal SafeFileHandle Handle { get; }
    internal HashSet<int> HeldBytes { get; } = new();

    public void LockShared(int offset) => ProcessInodeTable.Lock(this, offset);
    public void Unlock(int offset) => ProcessInodeTable.Unlock(this, offset);
    public bool IsLockedByOthers(int offset) => ProcessInodeTable.IsLockedByOthers(this, offset);
}
