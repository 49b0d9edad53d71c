using Vdisk.Native;

namespace Vdisk.Locking;

/// <summary>
/// QEMU's qemu_probe_lock_ops: once per process, issue F_OFD_GETLK on /dev/null; if the kernel
/// (or an interposed fcntl) refuses, OFD locks are unavailable. System-wide, not per filesystem.
/// </summary>
public static class OfdProbe
{
    private static readonly Lazy<bool> s_available = new(Probe);

    /// <summary>True when OFD lock commands work in this process.</summary>
    public static bool Available => s_available.Value;

    private static bool Probe()
    {
        int fd = LibC.Open("/dev/null", LibC.O_RDWR | LibC.O_CLOEXEC, 0);
        if (fd < 0)
        {
            int errno = LibC.LastErrno;
            Diagnostics.Warn($"Failed to open /dev/null for OFD lock probing: {LibC.StrError(errno)}");
            return false;
        }
        try
        {
            var fl = new Flock { Type = FcntlCommands.F_WRLCK, Whence = LibC.SEEK_SET, Start = 0, Length = 0 };
            return LibC.FcntlLock(fd, FcntlCommands.F_OFD_GETLK, ref fl) == 0;
        }
        finally
        {
            LibC.Close(fd);
        }
    }
}

/// <summary>fcntl command and lock type numbers (Linux x86_64 and arm64).</summary>
internal static class FcntlCommands
{
    public const int F_GETLK = 5;
    public const int F_SETLK = 6;
    public const int F_OFD_GETLK = 36;
    public const int F_OFD_SETLK = 37;
    public const short F_RDLCK = 0;
    public const short F_WRLCK = 1;
    public const short F_UNLCK = 2;
}
