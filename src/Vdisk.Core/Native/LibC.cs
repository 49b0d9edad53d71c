using System.Runtime.InteropServices;

namespace Vdisk.Native;

/// <summary>
/// The only place with P/Invoke. Each call returns -1 and leaves errno for
/// <see cref="Marshal.GetLastPInvokeError"/> like libc does; callers turn errno into
/// exceptions that name the file (<see cref="Errno"/>).
/// </summary>
internal static unsafe partial class LibC
{
    // The exact soname: a bare "libc" makes the runtime probe ~40 paths (libc.so is a linker
    // script) before it finds the library, on every start.
    private const string Lib = "libc.so.6";

    public const int O_RDONLY = 0x0;
    public const int O_RDWR = 0x2;
    public const int O_CREAT = 0x40;
    public const int O_EXCL = 0x80;
    public const int O_TRUNC = 0x200;
    public const int O_CLOEXEC = 0x80000;
    public static int O_DIRECT => RuntimeInformation.ProcessArchitecture == Architecture.Arm64 ? 0x10000 : 0x4000;

    public const int SEEK_SET = 0;
    public const int SEEK_DATA = 3;
    public const int SEEK_HOLE = 4;

    public const int FALLOC_FL_KEEP_SIZE = 0x01;
    public const int FALLOC_FL_PUNCH_HOLE = 0x02;
    public const int FALLOC_FL_ZERO_RANGE = 0x10;

    public const int AT_FDCWD = -100;
    public const int AT_EMPTY_PATH = 0x1000;
    public const uint STATX_BASIC_STATS = 0x7ff;

    public const int S_IFMT = 0xF000;
    public const int S_IFREG = 0x8000;
    public const int S_IFDIR = 0x4000;
    public const int S_IFCHR = 0x2000;
    public const int S_IFBLK = 0x6000;

    [LibraryImport(Lib, EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Open(string path, int flags, int mode);

    [LibraryImport(Lib, EntryPoint = "close", SetLastError = true)]
    public static partial int Close(int fd);

    [LibraryImport(Lib, EntryPoint = "fdatasync", SetLastError = true)]
    public static partial int FDataSync(int fd);

    [LibraryImport(Lib, EntryPoint = "ftruncate", SetLastError = true)]
    public static partial int FTruncate(int fd, long length);

    [LibraryImport(Lib, EntryPoint = "fallocate", SetLastError = true)]
    public static partial int FAllocate(int fd, int mode, long offset, long length);

    [LibraryImport(Lib, EntryPoint = "lseek", SetLastError = true)]
    public static partial long LSeek(int fd, long offset, int whence);

    [LibraryImport(Lib, EntryPoint = "statx", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int StatX(int dirfd, string path, int flags, uint mask, StatXBuffer* buffer);

    public const int O_WRONLY = 0x1;

    [LibraryImport(Lib, EntryPoint = "write", SetLastError = true)]
    public static partial nint Write(int fd, byte* buffer, nuint count);

    [LibraryImport(Lib, EntryPoint = "dup2", SetLastError = true)]
    public static partial int Dup2(int oldFd, int newFd);

    [LibraryImport(Lib, EntryPoint = "setsid", SetLastError = true)]
    public static partial int SetSid();

    [LibraryImport(Lib, EntryPoint = "umask")]
    public static partial uint Umask(uint mask);

    [LibraryImport(Lib, EntryPoint = "chdir", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int ChDir(string path);

    [LibraryImport(Lib, EntryPoint = "unlink", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Unlink(string path);

    [LibraryImport(Lib, EntryPoint = "getpid")]
    public static partial int GetPid();

    public const int RLIMIT_NOFILE = 7;

    [LibraryImport(Lib, EntryPoint = "getrlimit", SetLastError = true)]
    public static partial int GetRLimit(int resource, RLimit* limit);

    [LibraryImport(Lib, EntryPoint = "setrlimit", SetLastError = true)]
    public static partial int SetRLimit(int resource, RLimit* limit);

    /// <summary>
    /// fcntl for lock commands, resolved through the process's global symbol scope rather than
    /// bound to libc.so.6 directly: that way an LD_PRELOAD shim interposes on it as it does for
    /// QEMU (tests use one to force the POSIX fallback). A plain LibraryImport would bypass it.
    /// </summary>
    public static int FcntlLock(int fd, int cmd, ref Flock flock)
    {
        fixed (Flock* p = &flock)
        {
            return s_fcntl(fd, cmd, p);
        }
    }

    private static readonly delegate* unmanaged<int, int, Flock*, int> s_fcntl = ResolveFcntl();

    private static delegate* unmanaged<int, int, Flock*, int> ResolveFcntl()
    {
        var main = NativeLibrary.GetMainProgramHandle();
        if (NativeLibrary.TryGetExport(main, "fcntl", out var address))
            return (delegate* unmanaged<int, int, Flock*, int>)address;
        // Not found in the global scope (unusual): fall back to libc itself.
        var libc = NativeLibrary.Load("libc.so.6");
        return (delegate* unmanaged<int, int, Flock*, int>)NativeLibrary.GetExport(libc, "fcntl");
    }

    /// <summary>errno of the last call made through a function pointer or LibraryImport.</summary>
    public static int LastErrno => Marshal.GetLastSystemError();

    /// <summary>strerror(errno) text, e.g. "No such file or directory".</summary>
    public static string StrError(int errno) => Marshal.GetPInvokeErrorMessage(errno);
}

/// <summary><c>struct rlimit</c>: soft and hard limit.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct RLimit
{
    public ulong Current;
    public ulong Maximum;
}

/// <summary><c>struct flock</c> on Linux x86_64 and arm64: 32 bytes, l_pid at 24.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct Flock
{
    public short Type;
    public short Whence;
    public long Start;
    public long Length;
    public int Pid;
    private int _pad;
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
