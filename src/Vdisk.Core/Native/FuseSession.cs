using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Vdisk.Native;

/// <summary>
/// What a file mounted by <see cref="FuseSession"/> does. Each call answers its request exactly
/// once, at once or later from any thread, through the <see cref="FuseRequest"/> it gets; calls
/// come from the session's thread and must return quickly (start the work, answer when done).
/// </summary>
public interface IFuseFile
{
    /// <summary>stat(2).</summary>
    void GetAttributes(FuseRequest request);

    /// <summary>chmod, chown, truncate: the fields of <paramref name="change"/> that are set.</summary>
    void SetAttributes(FuseRequest request, FuseAttributeChange change);

    /// <summary>read(2) of <paramref name="size"/> bytes.</summary>
    void Read(FuseRequest request, long offset, int size);

    /// <summary>write(2); <paramref name="data"/> is the handler's to keep.</summary>
    void Write(FuseRequest request, long offset, byte[] data);

    /// <summary>fallocate(2) with FALLOC_FL_* <paramref name="mode"/>.</summary>
    void Allocate(FuseRequest request, int mode, long offset, long length);

    /// <summary>fsync(2), fdatasync(2), and the flush before each close(2).</summary>
    void Flush(FuseRequest request);

    /// <summary>lseek(2) with SEEK_DATA or SEEK_HOLE (others are answered EINVAL).</summary>
    void Seek(FuseRequest request, long offset, int whence);
}

/// <summary>What setattr asks to change; only the fields named by <see cref="Fields"/> are meaningful.</summary>
/// <param name="Fields">FUSE_SET_ATTR_* bits.</param>
/// <param name="Mode">New st_mode.</param>
/// <param name="Uid">New owner.</param>
/// <param name="Gid">New group.</param>
/// <param name="Size">New size.</param>
public readonly record struct FuseAttributeChange(int Fields, uint Mode, uint Uid, uint Gid, long Size)
{
    /// <summary>FUSE_SET_ATTR_MODE, _UID, _GID, _SIZE.</summary>
    public const int ModeField = 1 << 0, UidField = 1 << 1, GidField = 1 << 2, SizeField = 1 << 3;
}

/// <summary>The stat(2) answer for the mounted file.</summary>
/// <param name="Mode">st_mode (file type and permission bits).</param>
/// <param name="Uid">st_uid.</param>
/// <param name="Gid">st_gid.</param>
/// <param name="Size">st_size.</param>
/// <param name="BlockSize">st_blksize.</param>
/// <param name="Blocks">st_blocks (512-byte units).</param>
/// <param name="Time">st_atime, st_mtime and st_ctime, in seconds since the epoch.</param>
public readonly record struct FuseFileAttributes(uint Mode, uint Uid, uint Gid, long Size, int BlockSize, long Blocks, long Time);

/// <summary>One request from the kernel, answered once (later answers are ignored).</summary>
public sealed unsafe class FuseRequest
{
    private readonly FuseSession _session;
    private readonly nint _handle;
    private readonly ulong _inode;
    private int _answered;

    internal FuseRequest(FuseSession session, nint handle, ulong inode)
    {
        _session = session;
        _handle = handle;
        _inode = inode;
    }

    /// <summary>Fails the request with errno <paramref name="errno"/> (0: succeeds without data).</summary>
    public void ReplyError(int errno)
    {
        if (Claim()) Answered(LibFuse.ReplyError(_handle, errno));
    }

    /// <summary>Answers a getattr or setattr; the kernel may cache the attributes for a second, as QEMU lets it.</summary>
    public void ReplyAttributes(in FuseFileAttributes attributes)
    {
        if (!Claim()) return;
        byte* stat = stackalloc byte[StatLayout.Size];
        StatLayout.Write(stat, _inode, attributes);
        Answered(LibFuse.ReplyAttributes(_handle, stat, 1.0));
    }

    /// <summary>Answers a read.</summary>
    public void ReplyData(ReadOnlySpan<byte> data)
    {
        if (!Claim()) return;
        fixed (byte* p = data) Answered(LibFuse.ReplyBuffer(_handle, p, (nuint)data.Length));
    }

    /// <summary>Answers a write: <paramref name="count"/> bytes written.</summary>
    public void ReplyWritten(int count)
    {
        if (Claim()) Answered(LibFuse.ReplyWrite(_handle, (nuint)count));
    }

    /// <summary>Answers an lseek.</summary>
    public void ReplySeek(long offset)
    {
        if (Claim()) Answered(LibFuse.ReplySeek(_handle, offset));
    }

    private bool Claim() => Interlocked.Exchange(ref _answered, 1) == 0;

    // A failed reply means the kernel forgot the request (interrupted, or the file system is
    // being unmounted); there is nobody left to tell.
    private void Answered(int _) => _session.RequestDone();
}

/// <summary>
/// A regular file mounted over a regular file with FUSE (QEMU's FUSE export): libfuse's
/// session, a thread that reads the kernel's requests and hands them to an
/// <see cref="IFuseFile"/>, and unmounting once every request is answered.
/// </summary>
public sealed class FuseSession
{
    /// <summary>The largest read the kernel sends (QEMU's FUSE_MAX_BOUNCE_BYTES): a mount option and FUSE_INIT's max_read must agree.</summary>
    public const int MaxRead = 64 * 1024 * 1024;

    /// <summary>QEMU's BDRV_REQUEST_MAX_BYTES, the most FUSE_INIT offers for max_write.</summary>
    private const uint MaxWrite = 0x7FFFFE00;

    private static readonly unsafe void* Operations = CreateOperations();

    /// <summary>The process's real user and group ids, the mounted file's first owner (as QEMU's).</summary>
    public static (uint Uid, uint Gid) ProcessOwner => (LibC.GetUid(), LibC.GetGid());

    private readonly IFuseFile _file;
    private readonly object _lock = new();
    private readonly TaskCompletionSource _loopDone = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly SafeFileHandle _wake;
    private GCHandle _self;
    private nint _session;
    private unsafe LibFuse.Buffer* _buffer;
    private int _inFlight;
    private TaskCompletionSource? _idle;
    private Task? _stopped;

    private FuseSession(IFuseFile file)
    {
        _file = file;
        _wake = LibC.EventFd(0, LibC.EFD_CLOEXEC);
        if (_wake.IsInvalid) throw LibC.LastErrorException("eventfd", null);
    }

    /// <summary>
    /// Mounts <paramref name="file"/> on <paramref name="mountpoint"/> (an existing regular file)
    /// with QEMU's mount options, and starts serving it. Failures are QEMU's messages; libfuse
    /// (and fusermount3) print their reasons to stderr first, as under QEMU.
    /// </summary>
    /// <exception cref="IOException">The session could not be set up or mounted.</exception>
    /// <exception cref="DllNotFoundException">libfuse3 is not installed.</exception>
    public static FuseSession Mount(string mountpoint, bool allowOther, IFuseFile file)
    {
        if (!StatLayout.IsKnown) throw new IOException($"FUSE exports are not supported on {RuntimeInformation.ProcessArchitecture}");
        var session = new FuseSession(file);
        try
        {
            session.Create(allowOther);
            if (LibFuse.SessionMount(session._session, mountpoint) != 0)
                throw new IOException("Failed to mount FUSE session to export");
            // Non-blocking, as in QEMU's event loop: a request the kernel drops between poll and
            // read (its caller was killed) must not leave the loop asleep in read(2), deaf to Wake.
            int fd = LibFuse.SessionFd(session._session);
            int flags = LibC.FcntlFlags(fd, LibC.F_GETFL, 0);
            if (flags < 0 || LibC.FcntlFlags(fd, LibC.F_SETFL, flags | LibC.O_NONBLOCK) < 0)
            {
                LibFuse.SessionUnmount(session._session);
                throw LibC.LastErrorException("Failed to make the FUSE descriptor non-blocking", mountpoint);
            }
        }
        catch
        {
            session.Destroy(mounted: false);
            throw;
        }
        new Thread(session.Loop) { IsBackground = true, Name = "fuse-export" }.Start();
        return session;
    }

    private unsafe void Create(bool allowOther)
    {
        _self = GCHandle.Alloc(this);
        var argv = new[] { "", "-o", $"max_read={MaxRead},default_permissions{(allowOther ? ",allow_other" : "")}" };
        var strings = argv.Select(a => Marshal.StringToCoTaskMemUTF8(a)).ToArray();
        try
        {
            byte** pointers = stackalloc byte*[argv.Length + 1];
            for (int i = 0; i < strings.Length; i++) pointers[i] = (byte*)strings[i];
            pointers[argv.Length] = null;
            var args = new LibFuse.Args { Argc = argv.Length, Argv = pointers };
            _session = LibFuse.SessionNew(&args, Operations, (nuint)(LibFuse.OperationCount * sizeof(nint)), GCHandle.ToIntPtr(_self));
            // Parsing may have copied the vector; this frees only such a copy.
            LibFuse.FreeArgs(&args);
        }
        finally
        {
            foreach (var s in strings) Marshal.FreeCoTaskMem(s);
        }
        if (_session == 0) throw new IOException("Failed to set up FUSE session");
        _buffer = (LibFuse.Buffer*)NativeMemory.AllocZeroed((nuint)sizeof(LibFuse.Buffer));
    }

    /// <summary>
    /// Stops reading requests, waits until those being served are answered, then unmounts.
    /// Calls after the first wait for the same end.
    /// </summary>
    public Task StopAsync()
    {
        lock (_lock) return _stopped ??= StopCoreAsync();
    }

    private unsafe void Wake()
    {
        ulong one = 1;
        LibC.Write(_wake, (byte*)&one, sizeof(ulong));
    }

    private async Task StopCoreAsync()
    {
        Wake();
        await _loopDone.Task.ConfigureAwait(false);
        Task idle;
        lock (_lock)
        {
            idle = _inFlight == 0 ? Task.CompletedTask : (_idle = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).Task;
        }
        await idle.ConfigureAwait(false);
        Destroy(mounted: true);
    }

    private unsafe void Destroy(bool mounted)
    {
        if (_session != 0)
        {
            if (mounted) LibFuse.SessionUnmount(_session);
            LibFuse.SessionDestroy(_session);
            _session = 0;
        }
        if (_buffer is not null)
        {
            NativeMemory.Free(_buffer->Memory);
            NativeMemory.Free(_buffer);
            _buffer = null;
        }
        if (_self.IsAllocated) _self.Free();
        _wake.Dispose();
    }

    /// <summary>The session's thread: one request at a time is read and dispatched; answers come from anywhere.</summary>
    private unsafe void Loop()
    {
        try
        {
            int fuseFd = LibFuse.SessionFd(_session);
            int wakeFd = (int)_wake.DangerousGetHandle();
            var fds = stackalloc LibC.PollFd[2];
            while (true)
            {
                fds[0] = new LibC.PollFd { Fd = fuseFd, Events = LibC.POLLIN };
                fds[1] = new LibC.PollFd { Fd = wakeFd, Events = LibC.POLLIN };
                if (LibC.Poll(fds, 2, -1) < 0)
                {
                    if (LibC.LastError == Errno.EINTR) continue;
                    return;
                }
                if (fds[1].REvents != 0) return;
                if ((fds[0].REvents & LibC.POLLIN) == 0)
                {
                    if ((fds[0].REvents & (LibC.POLLERR | LibC.POLLHUP)) != 0) return;
                    continue;
                }
                int received = LibFuse.SessionReceiveBuffer(_session, _buffer);
                // 0 (ENODEV inside libfuse): the file system was unmounted from outside.
                if (received == 0 || received == -Errno.ENODEV || LibFuse.SessionExited(_session) != 0) return;
                // Anything else (EINTR, EAGAIN, a request the kernel took back: ENOENT) is
                // passing, as QEMU treats it: wait for the next request.
                if (received < 0) continue;
                LibFuse.SessionProcessBuffer(_session, _buffer);
            }
        }
        finally
        {
            _loopDone.TrySetResult();
        }
    }

    internal void RequestDone()
    {
        TaskCompletionSource? idle = null;
        lock (_lock)
        {
            if (--_inFlight == 0)
            {
                idle = _idle;
                _idle = null;
            }
        }
        idle?.TrySetResult();
    }

    private FuseRequest Begin(nint request, ulong inode)
    {
        lock (_lock) _inFlight++;
        return new FuseRequest(this, request, inode);
    }

    // ---------------------------------------------------------------- callbacks from libfuse

    private static unsafe void* CreateOperations()
    {
        var ops = (nint*)NativeMemory.AllocZeroed((nuint)(LibFuse.OperationCount * sizeof(nint)));
        ops[(int)LibFuse.Operation.Init] = (nint)(delegate* unmanaged[Cdecl]<nint, byte*, void>)&OnInit;
        ops[(int)LibFuse.Operation.Lookup] = (nint)(delegate* unmanaged[Cdecl]<nint, ulong, byte*, void>)&OnLookup;
        ops[(int)LibFuse.Operation.GetAttr] = (nint)(delegate* unmanaged[Cdecl]<nint, ulong, void*, void>)&OnGetAttr;
        ops[(int)LibFuse.Operation.SetAttr] = (nint)(delegate* unmanaged[Cdecl]<nint, ulong, byte*, int, void*, void>)&OnSetAttr;
        ops[(int)LibFuse.Operation.Open] = (nint)(delegate* unmanaged[Cdecl]<nint, ulong, void*, void>)&OnOpen;
        ops[(int)LibFuse.Operation.Read] = (nint)(delegate* unmanaged[Cdecl]<nint, ulong, nuint, long, void*, void>)&OnRead;
        ops[(int)LibFuse.Operation.Write] = (nint)(delegate* unmanaged[Cdecl]<nint, ulong, byte*, nuint, long, void*, void>)&OnWrite;
        ops[(int)LibFuse.Operation.Flush] = (nint)(delegate* unmanaged[Cdecl]<nint, ulong, void*, void>)&OnFlush;
        ops[(int)LibFuse.Operation.FSync] = (nint)(delegate* unmanaged[Cdecl]<nint, ulong, int, void*, void>)&OnFSync;
        ops[(int)LibFuse.Operation.FAllocate] = (nint)(delegate* unmanaged[Cdecl]<nint, ulong, int, long, long, void*, void>)&OnFAllocate;
        ops[(int)LibFuse.Operation.LSeek] = (nint)(delegate* unmanaged[Cdecl]<nint, ulong, long, int, void*, void>)&OnLSeek;
        return ops;
    }

    private static FuseSession SessionOf(nint request) => (FuseSession)GCHandle.FromIntPtr(LibFuse.RequestUserData(request)).Target!;

    /// <summary>Hands a request to the file; a handler that throws before answering fails it with EIO.</summary>
    private static void Dispatch(nint request, ulong inode, Action<IFuseFile, FuseRequest> handle)
    {
        FuseRequest? r = null;
        try
        {
            var session = SessionOf(request);
            r = session.Begin(request, inode);
            handle(session._file, r);
        }
        catch (Exception)
        {
            if (r is null) LibFuse.ReplyError(request, Errno.EIO);
            else r.ReplyError(Errno.EIO);
        }
    }

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static unsafe void OnInit(nint userData, byte* connection)
    {
        *(uint*)(connection + LibFuse.ConnMaxReadOffset) = MaxRead;
        uint maxWrite = *(uint*)(connection + LibFuse.ConnMaxWriteOffset);
        *(uint*)(connection + LibFuse.ConnMaxWriteOffset) = maxWrite == 0 ? MaxWrite : Math.Min(maxWrite, MaxWrite);
    }

    /// <summary>The mount point is the only file: no names below it.</summary>
    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static unsafe void OnLookup(nint request, ulong parent, byte* name) => LibFuse.ReplyError(request, Errno.ENOENT);

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static unsafe void OnGetAttr(nint request, ulong inode, void* fileInfo) =>
        Dispatch(request, inode, static (f, r) => f.GetAttributes(r));

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static unsafe void OnSetAttr(nint request, ulong inode, byte* stat, int fields, void* fileInfo)
    {
        FuseAttributeChange change;
        Action<IFuseFile, FuseRequest> handle;
        try
        {
            change = StatLayout.ReadChange(stat, fields);
            handle = (f, r) => f.SetAttributes(r, change);
        }
        catch (Exception)
        {
            LibFuse.ReplyError(request, Errno.ENOMEM);
            return;
        }
        Dispatch(request, inode, handle);
    }

    /// <summary>Opening needs nothing: the file is always there (QEMU answers the same).</summary>
    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static unsafe void OnOpen(nint request, ulong inode, void* fileInfo) => LibFuse.ReplyOpen(request, fileInfo);

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static unsafe void OnRead(nint request, ulong inode, nuint size, long offset, void* fileInfo)
    {
        // max_read bounds it; more would be a kernel bug.
        if (size > MaxRead)
        {
            LibFuse.ReplyError(request, Errno.EINVAL);
            return;
        }
        Dispatch(request, inode, (f, r) => f.Read(r, offset, (int)size));
    }

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static unsafe void OnWrite(nint request, ulong inode, byte* data, nuint size, long offset, void* fileInfo)
    {
        if (size > MaxWrite)
        {
            LibFuse.ReplyError(request, Errno.EINVAL);
            return;
        }
        // The buffer is libfuse's and is reused for the next request: copy before returning.
        Action<IFuseFile, FuseRequest> handle;
        try
        {
            var copy = GC.AllocateUninitializedArray<byte>((int)size);
            new ReadOnlySpan<byte>(data, (int)size).CopyTo(copy);
            handle = (f, r) => f.Write(r, offset, copy);
        }
        catch (Exception)
        {
            // An exception must not cross into libfuse: it would end the process.
            LibFuse.ReplyError(request, Errno.ENOMEM);
            return;
        }
        Dispatch(request, inode, handle);
    }

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static unsafe void OnFlush(nint request, ulong inode, void* fileInfo) =>
        Dispatch(request, inode, static (f, r) => f.Flush(r));

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static unsafe void OnFSync(nint request, ulong inode, int dataSync, void* fileInfo) =>
        Dispatch(request, inode, static (f, r) => f.Flush(r));

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static unsafe void OnFAllocate(nint request, ulong inode, int mode, long offset, long length, void* fileInfo) =>
        Dispatch(request, inode, (f, r) => f.Allocate(r, mode, offset, length));

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static unsafe void OnLSeek(nint request, ulong inode, long offset, int whence, void* fileInfo) =>
        Dispatch(request, inode, (f, r) => f.Seek(r, offset, whence));
}

/// <summary>
/// struct stat as glibc lays it out on the two 64-bit Linux architectures .NET runs on (x86-64
/// has its own layout; arm64 uses the generic one).
/// </summary>
internal static unsafe class StatLayout
{
    private static readonly bool Generic = RuntimeInformation.ProcessArchitecture != Architecture.X64;

    /// <summary>
    /// The architectures whose layout this knows: x86-64's own, and the generic 64-bit one of
    /// arm64, riscv64 and loongarch64 (32-bit ones, ppc64le and s390x differ).
    /// </summary>
    public static bool IsKnown => RuntimeInformation.ProcessArchitecture is Architecture.X64 or Architecture.Arm64 or Architecture.RiscV64 or Architecture.LoongArch64;

    public static int Size => Generic ? 128 : 144;

    private static int ModeOffset => Generic ? 16 : 24;

    private static int UidOffset => Generic ? 24 : 28;

    private static int GidOffset => Generic ? 28 : 32;

    private const int InodeOffset = 8, SizeOffset = 48, BlockSizeOffset = 56, BlocksOffset = 64, AtimeOffset = 72, MtimeOffset = 88, CtimeOffset = 104;

    public static void Write(byte* stat, ulong inode, in FuseFileAttributes a)
    {
        new Span<byte>(stat, Size).Clear();
        *(ulong*)(stat + InodeOffset) = inode;
        *(uint*)(stat + ModeOffset) = a.Mode;
        if (Generic) *(uint*)(stat + 20) = 1;
        else *(ulong*)(stat + 16) = 1;
        *(uint*)(stat + UidOffset) = a.Uid;
        *(uint*)(stat + GidOffset) = a.Gid;
        *(long*)(stat + SizeOffset) = a.Size;
        if (Generic) *(int*)(stat + BlockSizeOffset) = a.BlockSize;
        else *(long*)(stat + BlockSizeOffset) = a.BlockSize;
        *(long*)(stat + BlocksOffset) = a.Blocks;
        *(long*)(stat + AtimeOffset) = a.Time;
        *(long*)(stat + MtimeOffset) = a.Time;
        *(long*)(stat + CtimeOffset) = a.Time;
    }

    public static FuseAttributeChange ReadChange(byte* stat, int fields) => new(fields,
        *(uint*)(stat + ModeOffset), *(uint*)(stat + UidOffset), *(uint*)(stat + GidOffset), *(long*)(stat + SizeOffset));
}
