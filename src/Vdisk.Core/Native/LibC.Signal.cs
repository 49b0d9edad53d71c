using System.Runtime.InteropServices;

namespace Vdisk.Native;

// qemu-io's abort and sigraise commands end the process the way the C library does.
internal static unsafe partial class LibC
{
    [LibraryImport(Lib, EntryPoint = "signal")]
    public static partial nint Signal(int signal, nint handler);

    [LibraryImport(Lib, EntryPoint = "raise")]
    public static partial int Raise(int signal);

    [LibraryImport(Lib, EntryPoint = "sigprocmask")]
    public static partial int SigProcMask(int how, ulong* set, ulong* oldSet);

    [LibraryImport(Lib, EntryPoint = "abort")]
    public static partial void Abort();

    public const int SIG_UNBLOCK = 1;
    public static readonly nint SIG_DFL = 0;
}
