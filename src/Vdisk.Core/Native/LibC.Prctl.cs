using System.Runtime.InteropServices;

namespace Vdisk.Native;

// The etcd helper (vdisk-etcd) ends with the vdisk that started it.
internal static partial class LibC
{
    /// <summary>prctl(2); variadic in C, called with every argument as an unsigned long.</summary>
    [LibraryImport(Lib, EntryPoint = "prctl", SetLastError = true)]
    public static partial int Prctl(int option, nuint arg2, nuint arg3, nuint arg4, nuint arg5);

    [LibraryImport(Lib, EntryPoint = "getppid")]
    public static partial int GetPpid();

    public const int PR_SET_PDEATHSIG = 1;
}
