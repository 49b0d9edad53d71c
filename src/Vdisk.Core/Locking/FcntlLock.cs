using Microsoft.Win32.SafeHandles;
using Vdisk.Native;

namespace Vdisk.Locking;

/// <summary>One-byte fcntl operations on a descriptor with a given pair of SETLK/GETLK commands.</summary>
internal static class FcntlByteLock
{
    public static void Set(SafeFileHandle handle, int setCommand, short type, int offset)
    {
        bool added = false;
        handle.DangerousAddRef(ref added);
        try
        {
            int fd = (int)handle.DangerousGetHandle();
            while (true)
            {
                var fl = new Flock { Type = type, Whence = LibC.SEEK_SET, Start = offset, Length = 1 };
                if (LibC.FcntlLock(fd, setCommand, ref fl) == 0) return;
                int errno = LibC.LastErrno;
                if (errno == Errno.EINTR) continue;
                throw new NativeIOException(errno, LibC.StrError(errno));
            }
        }
        finally
        {
            if (added) handle.DangerousRelease();
        }
    }

    /// <summary>GETLK with F_WRLCK on one byte: true when a conflicting lock exists.</summary>
    public static bool Test(SafeFileHandle handle, int getCommand, int offset)
    {
        bool added = false;
        handle.DangerousAddRef(ref added);
        try
        {
            int fd = (int)handle.DangerousGetHandle();
            var fl = new Flock { Type = FcntlCommands.F_WRLCK, Whence = LibC.SEEK_SET, Start = offset, Length = 1 };
            if (LibC.FcntlLock(fd, getCommand, ref fl) != 0)
            {
                int errno = LibC.LastErrno;
                throw new NativeIOException(errno, LibC.StrError(errno));
            }
            return fl.Type != FcntlCommands.F_UNLCK;
        }
        finally
        {
            if (added) handle.DangerousRelease();
        }
    }
}

/// <summary>OFD locks: owned by the open file description, so two opens in one process conflict.</summary>
internal sealed class OfdLockPrimitive(SafeFileHandle handle) : ILockPrimitive
{
    public void LockShared(int offset) => FcntlByteLock.Set(handle, FcntlCommands.F_OFD_SETLK, FcntlCommands.F_RDLCK, offset);
    public void Unlock(int offset) => FcntlByteLock.Set(handle, FcntlCommands.F_OFD_SETLK, FcntlCommands.F_UNLCK, offset);
    public bool IsLockedByOthers(int offset) => FcntlByteLock.Test(handle, FcntlCommands.F_OFD_GETLK, offset);
}
