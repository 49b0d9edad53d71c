using Microsoft.Win32.SafeHandles;
using Vdisk.Native;

namespace Vdisk.Locking;

/// <summary>One-byte fcntl operations on a descriptor with a given pair of SETLK/GETLK commands.</summary>
internal static class FcntlByteLock
{
    public static void Set(SafeFileHandle handle, int setCommand, short type, int offset)
    {
        while (true)
        {
            var fl = new Flock { Type = type, Whence = LibC.SEEK_SET, Start = offset, Length = 1 };
            if (LibC.FcntlLock(handle, setCommand, ref fl) == 0) return;
            if (LibC.LastError != Errno.EINTR) throw LibC.LastErrorException(null, null);
        }
    }

    /// <summary>GETLK with F_WRLCK on one byte: true when a conflicting lock exists.</summary>
    public static bool Test(SafeFileHandle handle, int getCommand, int offset)
    {
        var fl = new Flock { Type = LibC.F_WRLCK, Whence = LibC.SEEK_SET, Start = offset, Length = 1 };
        if (LibC.FcntlLock(handle, getCommand, ref fl) != 0) throw LibC.LastErrorException(null, null);
        return fl.Type != LibC.F_UNLCK;
    }
}

/// <summary>OFD locks: owned by the open file description, so two opens in one process conflict.</summary>
internal sealed class OfdLockPrimitive(SafeFileHandle handle) : ILockPrimitive
{
    public void LockShared(int offset) => FcntlByteLock.Set(handle, LibC.F_OFD_SETLK, LibC.F_RDLCK, offset);
    public void Unlock(int offset) => FcntlByteLock.Set(handle, LibC.F_OFD_SETLK, LibC.F_UNLCK, offset);
    public bool IsLockedByOthers(int offset) => FcntlByteLock.Test(handle, LibC.F_OFD_GETLK, offset);
}
