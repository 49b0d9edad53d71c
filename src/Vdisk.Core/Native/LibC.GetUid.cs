using System.Runtime.InteropServices;

namespace Vdisk.Native;

internal static partial class LibC
{
    [LibraryImport(Lib, EntryPoint = "getuid")]
    public static partial uint GetUid();

    [LibraryImport(Lib, EntryPoint = "getgid")]
    public static partial uint GetGid();
}
