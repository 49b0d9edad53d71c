using System.Runtime.InteropServices;

namespace Vdisk.Native;

/// <summary>
/// libfuse 3's low-level API, as far as a one-file export uses it (QEMU's block/export/fuse.c
/// uses the same calls). libfuse is the library made for the job: it mounts (through
/// fusermount3 when unprivileged), negotiates FUSE_INIT and decodes the kernel's requests.
/// Bound lazily: without libfuse3.so.3 only a FUSE export fails, with
/// <see cref="DllNotFoundException"/>. Layouts are those of libfuse 3.14's headers on
/// 64-bit Linux.
/// </summary>
internal static unsafe partial class LibFuse
{
    internal const string Lib = "libfuse3.so.3";

    /// <summary>struct fuse_args.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct Args
    {
        public int Argc;
        public byte** Argv;
        public int Allocated;
    }

    /// <summary>struct fuse_buf (one buffer of a request).</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct Buffer
    {
        public nuint Size;
        public int Flags;
        public void* Memory;
        public int Fd;
        public long Position;
    }

    /// <summary>Offsets in struct fuse_conn_info: proto_major, proto_minor, max_write, max_read, ...</summary>
    public const int ConnMaxWriteOffset = 8, ConnMaxReadOffset = 12;

    /// <summary>Slots of struct fuse_lowlevel_ops (44 function pointers in 3.14), by member.</summary>
    public enum Operation
    {
        Init = 0,
        Lookup = 2,
        GetAttr = 4,
        SetAttr = 5,
        Open = 14,
        Read = 15,
        Write = 16,
        Flush = 17,
        FSync = 19,
        FAllocate = 40,
        LSeek = 43,
    }

    /// <summary>sizeof(struct fuse_lowlevel_ops) in 3.14.</summary>
    public const int OperationCount = 44;

    [LibraryImport(Lib, EntryPoint = "fuse_session_new")]
    public static partial nint SessionNew(Args* args, void* operations, nuint operationsSize, nint userData);

    [LibraryImport(Lib, EntryPoint = "fuse_session_mount")]
    public static partial int SessionMount(nint session, [MarshalAs(UnmanagedType.LPUTF8Str)] string mountpoint);

    [LibraryImport(Lib, EntryPoint = "fuse_session_fd")]
    public static partial int SessionFd(nint session);

    [LibraryImport(Lib, EntryPoint = "fuse_session_receive_buf")]
    public static partial int SessionReceiveBuffer(nint session, Buffer* buffer);

    [LibraryImport(Lib, EntryPoint = "fuse_session_process_buf")]
    public static partial void SessionProcessBuffer(nint session, Buffer* buffer);

    [LibraryImport(Lib, EntryPoint = "fuse_session_exited")]
    public static partial int SessionExited(nint session);

    [LibraryImport(Lib, EntryPoint = "fuse_session_unmount")]
    public static partial void SessionUnmount(nint session);

    [LibraryImport(Lib, EntryPoint = "fuse_session_destroy")]
    public static partial void SessionDestroy(nint session);

    [LibraryImport(Lib, EntryPoint = "fuse_opt_free_args")]
    public static partial void FreeArgs(Args* args);

    [LibraryImport(Lib, EntryPoint = "fuse_req_userdata")]
    public static partial nint RequestUserData(nint request);

    [LibraryImport(Lib, EntryPoint = "fuse_reply_err")]
    public static partial int ReplyError(nint request, int errno);

    [LibraryImport(Lib, EntryPoint = "fuse_reply_attr")]
    public static partial int ReplyAttributes(nint request, void* stat, double timeout);

    [LibraryImport(Lib, EntryPoint = "fuse_reply_open")]
    public static partial int ReplyOpen(nint request, void* fileInfo);

    [LibraryImport(Lib, EntryPoint = "fuse_reply_buf")]
    public static partial int ReplyBuffer(nint request, byte* data, nuint size);

    [LibraryImport(Lib, EntryPoint = "fuse_reply_write")]
    public static partial int ReplyWrite(nint request, nuint count);

    [LibraryImport(Lib, EntryPoint = "fuse_reply_lseek")]
    public static partial int ReplySeek(nint request, long offset);
}
