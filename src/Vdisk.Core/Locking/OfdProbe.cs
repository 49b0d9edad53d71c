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
        using var devNull = LibC.Open("/dev/null", LibC.O_RDWR | LibC.O_CLOEXEC, 0);
        if (devNull.IsInvalid)
        {
            Diagnostics.Warn($"Failed to open /dev/null for OFD lock probing: {LibC.StrError(LibC.LastError)}");
            return false;
        }
        var fl = new Flock { Type = LibC.F_WRLCK, Whence = LibC.SEEK_SET, Start = 0, Length = 0 };
        return LibC.FcntlLock(devNull, LibC.F_OFD_GETLK, ref fl) == 0;
    }
}
