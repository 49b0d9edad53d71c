using System.Runtime.InteropServices;

namespace Vdisk.Native;

internal static unsafe partial class LibC
{
    public const int RLIMIT_NOFILE = 7;

    [LibraryImport(Lib, EntryPoint = "getrlimit", SetLastError = true)]
    public static partial int GetRLimit(int resource, RLimit* limit);

    [LibraryImport(Lib, EntryPoint = "setrlimit", SetLastError = true)]
    public static partial int SetRLimit(int resource, RLimit* limit);
}

/// <summary><c>struct rlimit</c>: soft and hard limit.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct RLimit
{
    public ulong Current;
    public ulong Maximum;
}
