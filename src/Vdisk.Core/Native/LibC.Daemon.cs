using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Vdisk.Native;

// The calls qemu-storage-daemon's --daemonize and --pidfile make (os_daemonize, os_setup_post,
// qemu_write_pidfile); only DaemonProcess uses them.
internal static unsafe partial class LibC
{
    public const int O_WRONLY = 0x1;

    [LibraryImport(Lib, EntryPoint = "write", SetLastError = true)]
    public static partial nint Write(SafeFileHandle fd, byte* buffer, nuint count);

    [LibraryImport(Lib, EntryPoint = "dup2", SetLastError = true)]
    public static partial int Dup2(SafeFileHandle oldFd, int newFd);

    [LibraryImport(Lib, EntryPoint = "setsid", SetLastError = true)]
    public static partial int SetSid();

    [LibraryImport(Lib, EntryPoint = "umask")]
    public static partial uint Umask(uint mask);

    [LibraryImport(Lib, EntryPoint = "chdir", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int ChDir(string path);

    [LibraryImport(Lib, EntryPoint = "unlink", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Unlink(string path);
}
