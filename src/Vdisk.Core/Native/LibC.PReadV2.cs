using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Vdisk.Native;

internal static unsafe partial class LibC
{
    /// <summary>preadv2 flag: read only what the page cache holds; EAGAIN instead of waiting for the disk.</summary>
    public const int RWF_NOWAIT = 0x08;

    /// <summary>One element of a scatter/gather list (struct iovec).</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct IoVec
    {
        public void* Base;
        public nuint Length;
    }

    [LibraryImport(Lib, EntryPoint = "preadv2", SetLastError = true)]
    public static partial nint PReadV2(SafeFileHandle fd, IoVec* iov, int iovCount, long offset, int flags);
}
