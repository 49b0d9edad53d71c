using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Vdisk.Native;

internal static unsafe partial class LibC
{
    // Lock commands and types: the same numbers on x86_64 and arm64.
    public const int F_GETLK = 5;
    public const int F_SETLK = 6;
    public const int F_OFD_GETLK = 36;
    public const int F_OFD_SETLK = 37;
    public const short F_RDLCK = 0;
    public const short F_WRLCK = 1;
    public const short F_UNLCK = 2;

    /// <summary>
    /// fcntl(fd, cmd, &amp;flock) for lock commands. fcntl is resolved through the process's global
    /// symbol scope rather than bound to libc.so.6 directly: that way an LD_PRELOAD shim
    /// interposes on it as it does for QEMU (tests use one to force the POSIX fallback); a
    /// LibraryImport would bypass it. A function pointer gets no marshalling, so this is the one
    /// place that keeps a handle alive by hand and saves errno itself, right after the call, where
    /// <see cref="LastError"/> finds it as for any import.
    /// </summary>
    public static int FcntlLock(SafeFileHandle fd, int cmd, ref Flock flock)
    {
        bool added = false;
        fd.DangerousAddRef(ref added);
        try
        {
            fixed (Flock* p = &flock)
            {
                Marshal.SetLastSystemError(0);
                int result = s_fcntl((int)fd.DangerousGetHandle(), cmd, p);
                Marshal.SetLastPInvokeError(Marshal.GetLastSystemError());
                return result;
            }
        }
        finally
        {
            if (added) fd.DangerousRelease();
        }
    }

    private static readonly delegate* unmanaged<int, int, Flock*, int> s_fcntl = ResolveFcntl();

    private static delegate* unmanaged<int, int, Flock*, int> ResolveFcntl()
    {
        var main = NativeLibrary.GetMainProgramHandle();
        if (NativeLibrary.TryGetExport(main, "fcntl", out var address))
            return (delegate* unmanaged<int, int, Flock*, int>)address;
        // Not found in the global scope (unusual): fall back to libc itself.
        var libc = NativeLibrary.Load(Lib);
        return (delegate* unmanaged<int, int, Flock*, int>)NativeLibrary.GetExport(libc, "fcntl");
    }
}

/// <summary><c>struct flock</c> on Linux x86_64 and arm64: 32 bytes, l_pid at 24.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct Flock
{
    public short Type;
    public short Whence;
    public long Start;
    public long Length;
    public int Pid;
    private int _pad;
}
