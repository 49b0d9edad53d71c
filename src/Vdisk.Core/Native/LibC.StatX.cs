using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Vdisk.Native;

internal static unsafe partial class LibC
{
    public const int AT_FDCWD = -100;
    public const int AT_SYMLINK_NOFOLLOW = 0x100;
    public const int AT_EMPTY_PATH = 0x1000;
    public const uint STATX_BASIC_STATS = 0x7ff;

    public const int S_IFMT = 0xF000;
    public const int S_IFSOCK = 0xC000;
    public const int S_IFREG = 0x8000;
    public const int S_IFDIR = 0x4000;
    public const int S_IFCHR = 0x2000;
    public const int S_IFBLK = 0x6000;

    /// <summary>statx(2) of a path relative to the working directory (<c>AT_FDCWD</c>).</summary>
    public static int StatX(string path, int flags, StatXBuffer* buffer) => StatX(AT_FDCWD, path, flags, STATX_BASIC_STATS, buffer);

    /// <summary>statx(2) of an open descriptor (fstat, <c>AT_EMPTY_PATH</c>).</summary>
    public static int FStatX(SafeFileHandle fd, StatXBuffer* buffer) => StatX(fd, "", AT_EMPTY_PATH, STATX_BASIC_STATS, buffer);

    [LibraryImport(Lib, EntryPoint = "statx", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int StatX(int dirfd, string path, int flags, uint mask, StatXBuffer* buffer);

    [LibraryImport(Lib, EntryPoint = "statx", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int StatX(SafeFileHandle dirfd, string path, int flags, uint mask, StatXBuffer* buffer);
}

/// <summary><c>struct statx</c> (architecture-independent, 256 bytes); only the fields we use.</summary>
[StructLayout(LayoutKind.Explicit, Size = 256)]
internal struct StatXBuffer
{
    [FieldOffset(0)] public uint Mask;
    [FieldOffset(4)] public uint BlockSize;
    [FieldOffset(16)] public uint NLink;
    [FieldOffset(28)] public ushort Mode;
    [FieldOffset(32)] public ulong Inode;
    [FieldOffset(40)] public ulong Size;
    [FieldOffset(48)] public ulong Blocks;
    [FieldOffset(128)] public uint RdevMajor;
    [FieldOffset(132)] public uint RdevMinor;
    [FieldOffset(136)] public uint DevMajor;
    [FieldOffset(140)] public uint DevMinor;
}
