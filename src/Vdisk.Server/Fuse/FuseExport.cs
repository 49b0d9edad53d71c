using Vdisk.Graph;
using Vdisk.Native;
using Vdisk.Server.Daemon;
using Vdisk.Server.Exports;

namespace Vdisk.Server.Fuse;

/// <summary>
/// qemu-storage-daemon's FUSE export (block/export/fuse.c): the node's guest-visible contents as
/// one regular file mounted over an existing regular file. Reads and writes stop at the end
/// unless the export is growable; truncate and fallocate resize only writable exports; lseek
/// with SEEK_DATA/SEEK_HOLE answers from block status through the backing chain.
/// </summary>
public sealed class FuseExport : BlockExport, IFuseFile
{
    // FALLOC_FL_* and SEEK_* (linux/falloc.h, unistd.h).
    private const int KeepSize = 0x01, PunchHole = 0x02, ZeroRange = 0x10;
    private const int SeekData = 3, SeekHole = 4;
    private const uint RegularFile = 0x8000, OwnerRead = 0x100, OwnerWrite = 0x80, GroupOtherAll = 0x3F, AnyWrite = 0x92;

    /// <summary>QEMU's BDRV_REQUEST_MAX_BYTES: zeroing goes in pieces no larger.</summary>
    private const long MaxRequest = 0x7FFFFE00;

    private readonly Lock _attributesLock = new();
    private FuseSession? _session;
    private uint _mode, _uid, _gid;

    private FuseExport(string id, DiskImage image, bool writable, string mountpoint, bool growable) : base(id, image, writable)
    {
        Mountpoint = mountpoint;
        Growable = growable;
        _mode = RegularFile | OwnerRead | (writable ? OwnerWrite : 0);
        (_uid, _gid) = FuseSession.ProcessOwner;
    }

    /// <inheritdoc />
    public override string Type => "fuse";

    /// <summary>The file the export is mounted on.</summary>
    public string Mountpoint { get; }

    /// <summary>Writes past the end grow the image.</summary>
    public bool Growable { get; }

    /// <summary>Other users may use the mount (<c>allow_other</c> was a mount option).</summary>
    public bool AllowOther
    {
        get => Volatile.Read(ref _allowOther);
        private set => Volatile.Write(ref _allowOther, value);
    }

    private bool _allowOther;

    /// <summary>
    /// Mounts the export (fuse_export_create after its permission change). <paramref name="allowOther"/>
    /// is on, off or auto: auto tries with <c>allow_other</c> first and quietly falls back.
    /// </summary>
    public static FuseExport Mount(string id, DiskImage image, bool writable, string mountpoint, bool growable, string allowOther)
    {
        if (FileSystemEntry.WhyNotRegularFile(mountpoint) is { } reason) throw new DaemonException(reason);
        var export = new FuseExport(id, image, writable, mountpoint, growable);
        // libfuse keeps the path for unmounting; a daemon has changed to / by then.
        mountpoint = Path.GetFullPath(mountpoint);
        try
        {
            // AllowOther is set before mounting: requests arrive as soon as the mount exists.
            if (allowOther == "auto")
            {
                try
                {
                    export.AllowOther = true;
                    export._session = FuseSession.Mount(mountpoint, allowOther: true, export);
                }
                catch (IOException)
                {
                    export.AllowOther = false;
                    export._session = FuseSession.Mount(mountpoint, allowOther: false, export);
                }
            }
            else
            {
                export.AllowOther = allowOther == "on";
                export._session = FuseSession.Mount(mountpoint, export.AllowOther, export);
            }
        }
        catch (IOException e)
        {
            throw new DaemonException(e.Message);
        }
        catch (DllNotFoundException)
        {
            throw new DaemonException("FUSE exports need libfuse 3 (libfuse3.so.3; Debian: libfuse3-3)");
        }
        return export;
    }

    /// <summary>Stops serving requests, waits for those in flight to be answered, and unmounts.</summary>
    internal override async Task BeginShutdown(bool disconnectClients)
    {
        ShuttingDown = true;
        if (_session is { } session) await session.StopAsync().ConfigureAwait(false);
    }

    // ---------------------------------------------------------------- requests

    /// <inheritdoc />
    public void GetAttributes(FuseRequest request) => request.ReplyAttributes(Attributes());

    private FuseFileAttributes Attributes()
    {
        long length = Image.Length;
        long allocated = Node.AllocatedSize ?? 0;
        long blocks = ((allocated > 0 ? allocated : length) + 511) / 512;
        long now = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        lock (_attributesLock) return new FuseFileAttributes(_mode, _uid, _gid, length, 1, blocks, now);
    }

    /// <summary>
    /// Only resizing and permission changes, and only as far as they permit access: no +w on a
    /// read-only export, no access for others or other owners without allow_other.
    /// </summary>
    public void SetAttributes(FuseRequest request, FuseAttributeChange change) => _ = Serve(request, async () =>
    {
        int supported = FuseAttributeChange.SizeField | FuseAttributeChange.ModeField;
        if (AllowOther) supported |= FuseAttributeChange.UidField | FuseAttributeChange.GidField;
        if ((change.Fields & ~supported) != 0) return Errno.ENOTSUP;
        bool setsMode = (change.Fields & FuseAttributeChange.ModeField) != 0;
        if (setsMode && !AllowOther && (change.Mode & GroupOtherAll) != 0) return Errno.EPERM;
        if (setsMode && !Writable && (change.Mode & AnyWrite) != 0) return Errno.EROFS;
        if ((change.Fields & FuseAttributeChange.SizeField) != 0)
        {
            if (!Writable) return Errno.EACCES;
            await Image.TruncateAsync(change.Size, Preallocation.Off).ConfigureAwait(false);
        }
        lock (_attributesLock)
        {
            if (setsMode) _mode = (change.Mode & 0xFFF) | RegularFile;
            if ((change.Fields & FuseAttributeChange.UidField) != 0) _uid = change.Uid;
            if ((change.Fields & FuseAttributeChange.GidField) != 0) _gid = change.Gid;
        }
        request.ReplyAttributes(Attributes());
        return 0;
    });

    /// <summary>Reads stop short at the end, as clients expect.</summary>
    public void Read(FuseRequest request, long offset, int size) => _ = Serve(request, async () =>
    {
        long length = Image.Length;
        int n = offset >= length ? 0 : (int)Math.Min(size, length - offset);
        var buffer = GC.AllocateUninitializedArray<byte>(n);
        if (n > 0) await Image.ReadAsync(offset, buffer).ConfigureAwait(false);
        request.ReplyData(buffer);
        return 0;
    });

    /// <summary>Writes past the end grow a growable export and stop short on any other.</summary>
    public void Write(FuseRequest request, long offset, byte[] data) => _ = Serve(request, async () =>
    {
        if (!Writable) return Errno.EACCES;
        long length = Image.Length;
        int n = data.Length;
        if (offset + n > length)
        {
            if (Growable) await Image.TruncateAsync(offset + n, Preallocation.Off).ConfigureAwait(false);
            else if (offset > length) return Errno.EIO;
            else n = (int)(length - offset);
        }
        if (n > 0) await Image.WriteAsync(offset, data.AsMemory(0, n)).ConfigureAwait(false);
        request.ReplyWritten(n);
        return 0;
    });

    /// <summary>
    /// fallocate as 7.2's fuse_fallocate: plain allocation only at the end (a preallocating
    /// truncate), PUNCH_HOLE (with KEEP_SIZE) as discard, ZERO_RANGE as zeroing, growing first
    /// unless KEEP_SIZE.
    /// </summary>
    public void Allocate(FuseRequest request, int mode, long offset, long length) => _ = Serve(request, async () =>
    {
        if (!Writable) return Errno.EACCES;
        long size = Image.Length;
        if ((mode & KeepSize) != 0) length = Math.Min(length, size - offset);
        // Past the end with KEEP_SIZE: QEMU's loop issues one request of negative length, which fails.
        if (length < 0) return Errno.EIO;
        if (mode == 0)
        {
            if (offset < size) return Errno.EOPNOTSUPP;
            if (offset > size) await Image.TruncateAsync(offset, Preallocation.Off).ConfigureAwait(false);
            await Image.TruncateAsync(offset + length, Preallocation.Falloc).ConfigureAwait(false);
        }
        else if ((mode & PunchHole) != 0)
        {
            if ((mode & KeepSize) == 0) return Errno.EINVAL;
            // 7.2 discards (later QEMUs zero): on a node without discard=unmap nothing changes.
            for (long end = offset + length; offset < end; offset += MaxRequest)
                await Image.DiscardAsync(offset, Math.Min(end - offset, MaxRequest)).ConfigureAwait(false);
        }
        else if ((mode & ZeroRange) != 0)
        {
            if ((mode & KeepSize) == 0 && offset + length > size)
                await Image.TruncateAsync(offset + length, Preallocation.Off).ConfigureAwait(false);
            await ZeroAsync(offset, length, ZeroFlags.None).ConfigureAwait(false);
        }
        else
        {
            return Errno.EOPNOTSUPP;
        }
        request.ReplyError(0);
        return 0;
    });

    private async Task ZeroAsync(long offset, long length, ZeroFlags flags)
    {
        for (long end = offset + length; offset < end; offset += MaxRequest)
            await Image.WriteZeroesAsync(offset, Math.Min(end - offset, MaxRequest), flags).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public void Flush(FuseRequest request) => _ = Serve(request, async () =>
    {
        await Image.FlushAsync().ConfigureAwait(false);
        request.ReplyError(0);
        return 0;
    });

    /// <summary>
    /// SEEK_DATA and SEEK_HOLE from block status through the backing chain (what the guest would
    /// read as data); the end is an implicit hole.
    /// </summary>
    public void Seek(FuseRequest request, long offset, int whence) => _ = Serve(request, async () =>
    {
        if (whence != SeekData && whence != SeekHole) return Errno.EINVAL;
        long length = Image.Length;
        if (offset >= length)
        {
            if (offset > length || whence == SeekData) return Errno.ENXIO;
            request.ReplySeek(offset);
            return 0;
        }
        await foreach (var extent in BlockExtents.WalkAsync(Node, offset, length - offset, ExtentScope.Chain).ConfigureAwait(false))
        {
            bool data = (extent.Flags & BlockStatusFlags.Data) != 0;
            if (data == (whence == SeekData))
            {
                request.ReplySeek(Math.Max(offset, extent.Offset));
                return 0;
            }
        }
        if (whence == SeekData) return Errno.ENXIO;
        request.ReplySeek(length);
        return 0;
    });

    /// <summary>
    /// Runs one request inside the export's gate. The work answers success itself and returns 0,
    /// or returns an errno to answer; I/O errors become their errno.
    /// </summary>
    private async Task Serve(FuseRequest request, Func<Task<int>> work)
    {
        int errno;
        try
        {
            await Gate.EnterAsync(CancellationToken.None).ConfigureAwait(false);
            try
            {
                errno = await work().ConfigureAwait(false);
            }
            finally
            {
                Gate.Exit();
            }
        }
        catch (Exception e)
        {
            // Every request must be answered, or the program using the file hangs in the kernel.
            errno = e is NativeIOException { Errno: > 0 } n ? n.Errno : Errno.EIO;
            if (e is not IOException and not ObjectDisposedException)
                Diagnostics.WarningSink?.Invoke($"FUSE export '{Id}': {e.GetType().Name}: {e.Message}");
        }
        if (errno != 0) request.ReplyError(errno);
    }
}
