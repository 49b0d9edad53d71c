using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Vdisk.Native;

internal static partial class LibC
{
    public const int SEEK_SET = 0;
    public const int SEEK_END = 2;
    public const int SEEK_DATA = 3;
    public const int SEEK_HOLE = 4;

    [LibraryImport(Lib, EntryPoint = "lseek", SetLastError = true)]
    public static partial long LSeek(SafeFileHandle fd, long offset, int whence);
}
