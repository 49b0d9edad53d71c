using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Vdisk.Native;

internal static partial class LibC
{
    public const int EFD_CLOEXEC = 0x80000;

    [LibraryImport(Lib, EntryPoint = "eventfd", SetLastError = true)]
    public static partial SafeFileHandle EventFd(uint initialValue, int flags);
}
