using System.Runtime.InteropServices;

namespace Vdisk.Native;

internal static partial class LibC
{
    public const int F_GETFL = 3, F_SETFL = 4;

    /// <summary>fcntl(fd, F_GETFL/F_SETFL, flags) on a descriptor owned elsewhere (a library's).</summary>
    [LibraryImport(Lib, EntryPoint = "fcntl", SetLastError = true)]
    public static partial int FcntlFlags(int fd, int cmd, int flags);
}
