using Microsoft.Win32.SafeHandles;
using Vdisk.Graph;
using Vdisk.Locking;
using Vdisk.Locking.Cluster;
using Vdisk.Native;
using Vdisk.Permissions;

namespace Vdisk.Drivers.File;

/// <summary>
/// The <c>file</c> protocol driver (QEMU's file-posix): owns the descriptor, does positional
/// I/O with <see cref="RandomAccess"/>, and carries the image's lock bytes. The descriptor is
/// opened with open(2), never FileStream, which would add a whole-file flock (see
/// docs/compatibility.md).
/// </summary>
public sealed class FileNode : BlockNode
{
    private SafeFileHandle _handle;
    private bool _handleWritable;
    private SafeFileHandle? _pendingHandle;
    private readonly bool _direct;
    private readonly PermissionLockTransaction? _locks;
    private readonly PosixLockPrimitive? _posixOwner;
    private readonly ClusterLockHolder? _cluster;
    private bool _closed;

    private FileNode(string nodeName, NodeFlags flags, string filename, SafeFileHandle handle, FileIdentity identity,
        LockKind lockKind, bool isRegularFile, bool direct, bool noFlush, ClusterLockHolder? cluster)
        : base(nodeName, flags, filename)
    {
        _direct = direct;
        _handle = handle;
        _handleWritable = (flags & NodeFlags.ReadWrite) != 0;
        NoFlush = noFlush;
        Identity = identity;
        LockKind = lockKind;
        IsRegularFile = isRegularFile;
        ILockPrimitive? primitive = lockKind switch
        {
            LockKind.Ofd => new OfdLockPrimitive(handle),
            LockKind.Posix => _posixOwner = ProcessInodeTable.RegisterPosixOwner(identity, handle),
            _ => null,
        };
        _cluster = cluster;
        if (cluster is not null) primitive = new ClusterLockPrimitive(primitive, cluster);
        if (primitive is not null) _locks = new PermissionLockTransaction(primitive, filename, Diagnostics.Warn);
    }

    /// <inheritdoc />
    public override string DriverName => "file";

    /// <inheritdoc />
    public override bool IsProtocol => true;

    /// <inheritdoc />
    public override IChildPermissionRule PermissionRule => LeafChildPermissionRule.Instance;

    /// <summary>Device and inode of the open file.</summary>
    public FileIdentity Identity { get; }

    /// <summary>Which lock syscalls this node uses.</summary>
    public LockKind LockKind { get; }

    /// <summary>False for character and block devices.</summary>
    public bool IsRegularFile { get; }

    /// <summary>The node's cluster lock (<c>cluster-lock-id</c>), or null.</summary>
    public ClusterLockHolder? ClusterLock => _cluster;

    /// <summary>
    /// cache.no-flush (cache=unsafe, qemu-img convert's default for its target): flushes return
    /// without fdatasync. Writes still reach the page cache in the order they were issued, so a
    /// killed process leaves the same consistent image; only a host crash can lose them.
    /// </summary>
    public bool NoFlush { get; }

    /// <summary>The descriptor (for drivers layered directly on it).</summary>
    public SafeFileHandle Handle => _handle;

    /// <summary>Bits whose "holds" byte (100+i) this node has locked.</summary>
    public BlockPermission LockedPerm => _locks?.LockedPerm ?? BlockPermission.None;

    /// <summary>Bits whose "does not share" byte (200+i) this node has locked.</summary>
    public BlockPermission LockedUnshared => _locks?.LockedUnshared ?? BlockPermission.None;

    /// <summary>
    /// Opens <paramref name="path"/> like file-posix's raw_open_common (creating it, mode 0644,
    /// with <paramref name="create"/>). Takes no locks: they come with the first permission update.
    /// With <paramref name="clusterLockId"/>, the cluster lock uses <paramref name="clusterSettings"/>
    /// (null: the environment's). <paramref name="requiredKind"/> names the driver whose file type
    /// rule applies (raw_open_common: <c>file</c> wants a regular file, <c>host_device</c> and
    /// <c>host_cdrom</c> a device); null accepts any.
    /// </summary>
    public static FileNode Open(string nodeName, string path, NodeFlags flags, LockingMode locking, bool direct = false, bool create = false,
        bool noFlush = false, string? clusterLockId = null, ClusterLockSettings? clusterSettings = null, string? requiredKind = null)
    {
        int oflags = LibC.O_CLOEXEC | ((flags & NodeFlags.ReadWrite) != 0 ? LibC.O_RDWR : LibC.O_RDONLY);
        if (direct) oflags |= LibC.O_DIRECT;
        if (create) oflags |= LibC.O_CREAT;
        var handle = LibC.Open(path, oflags, create ? CreateMode : 0);
        // raw_co_create's qemu_create words its failure "Could not create".
        if (handle.IsInvalid) throw LibC.LastErrorException($"Could not {(create ? "create" : "open")} '{path}'", path);
        FileIdentity identity;
        bool regular;
        try
        {
            var st = Stat(handle, path);
            int type = st.Mode & LibC.S_IFMT;
            if (type == LibC.S_IFDIR && requiredKind is null or FileDriver.FileName)
                throw new NativeIOException(Errno.EISDIR, $"'file' driver requires '{path}' to be a regular file", path);
            if (requiredKind == FileDriver.FileName && type != LibC.S_IFREG)
                throw new NativeIOException(Errno.EINVAL, $"'file' driver requires '{path}' to be a regular file", path);
            if (requiredKind is not (null or FileDriver.FileName) && type is not (LibC.S_IFCHR or LibC.S_IFBLK))
                throw new NativeIOException(Errno.EINVAL, $"'{requiredKind}' driver requires '{path}' to be either a character or block device", path);
            regular = type == LibC.S_IFREG;
            identity = new FileIdentity(st.DevMajor, st.DevMinor, st.Inode);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
        ProcessInodeTable.Opened(identity);
        LockKind kind;
        ClusterLockHolder? cluster = null;
        try
        {
            kind = LockingModes.Resolve(locking, Diagnostics.Warn);
            // locking=off means no locks at all, cluster ones included.
            if (clusterLockId is not null && locking != LockingMode.Off)
                cluster = ClusterLocks.CreateHolder(clusterSettings, clusterLockId, path, nodeName, identity, isBlockDevice: !regular);
        }
        catch
        {
            ProcessInodeTable.Close(identity, handle);
            throw;
        }
        return new FileNode(nodeName, flags, path, handle, identity, kind, regular, direct, noFlush, cluster);
    }

    /// <summary>The mode of a file the node creates: 0644, as file-posix's raw_co_create.</summary>
    private const UnixFileMode CreateMode =
        UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead;

    internal static unsafe StatXBuffer Stat(SafeFileHandle handle, string path)
    {
        StatXBuffer st;
        if (LibC.FStatX(handle, &st) != 0) throw LibC.LastErrorException($"Could not stat '{path}'", path);
        return st;
    }

    /// <inheritdoc />
    protected internal override LockConflictException? PreparePermissions(PermissionPair cumulative)
    {
        // A node reopened read-write (qemu-img commit's base, say) needs a read-write descriptor:
        // like file-posix's raw_check_perm, open it now and lock it only after the test passed
        // on the old one, so that its locks never show in the test.
        bool needWritable = (Flags & NodeFlags.ReadWrite) != 0 && !_handleWritable;
        if (needWritable) _pendingHandle = OpenDescriptor(Filename, LibC.O_RDWR, _direct);
        bool prepared = false;
        try
        {
            if (_locks is not null && !IsInactive)
            {
                if (_locks.TryPrepare(cumulative) is { } conflict) return conflict;
                if (_pendingHandle is not null && LockKind == LockKind.Ofd)
                {
                    bool copied = false;
                    try
                    {
                        _locks.CopyTo(new OfdLockPrimitive(_pendingHandle), cumulative);
                        copied = true;
                    }
                    finally
                    {
                        if (!copied) _locks.Abort();
                    }
                }
            }
            prepared = true;
            return null;
        }
        finally
        {
            if (!prepared)
            {
                _pendingHandle?.Dispose();
                _pendingHandle = null;
            }
        }
    }

    private static SafeFileHandle OpenDescriptor(string path, int access, bool direct)
    {
        int oflags = LibC.O_CLOEXEC | access | (direct ? LibC.O_DIRECT : 0);
        var handle = LibC.Open(path, oflags, 0);
        if (handle.IsInvalid) throw LibC.LastErrorException("Could not reopen file", path);
        return handle;
    }

    /// <summary>raw_set_perm's switch: the old descriptor is closed (its OFD locks go with it).</summary>
    private void SwitchToPendingHandle()
    {
        if (_pendingHandle is null) return;
        var old = _handle;
        _handle = _pendingHandle;
        _handleWritable = true;
        _pendingHandle = null;
        ProcessInodeTable.Opened(Identity);
        if (LockKind == LockKind.Ofd)
            _locks!.UsePrimitive(_cluster is null ? new OfdLockPrimitive(_handle) : new ClusterLockPrimitive(new OfdLockPrimitive(_handle), _cluster));
        // POSIX locks belong to the process: the table keeps the old descriptor open while they are held.
        ProcessInodeTable.Close(Identity, old);
    }

    /// <inheritdoc />
    protected internal override void CommitPermissions(PermissionPair cumulative)
    {
        SwitchToPendingHandle();
        if (_locks is null) return;
        if (IsInactive) _locks.RecordWithoutLocking(cumulative);
        else _locks.Commit(cumulative);
    }

    /// <inheritdoc />
    protected internal override void ReserveUnshared(BlockPermission unshared) => _locks?.Reserve(unshared);

    /// <inheritdoc />
    protected internal override void ReleaseReservation() => _locks?.ReleaseReservation(active: !IsInactive);

    /// <summary>Bits whose "does not share" byte is reserved (see <see cref="Activation.Reserve"/>).</summary>
    public BlockPermission ReservedUnshared => _locks?.Reserved ?? BlockPermission.None;

    /// <inheritdoc />
    protected internal override void AbortPermissions()
    {
        _pendingHandle?.Dispose();
        _pendingHandle = null;
        if (_locks is null || IsInactive) return;
        _locks.Abort();
    }

    /// <inheritdoc />
    public override long Length
    {
        get
        {
            if (!IsRegularFile)
            {
                long end = LibC.LSeek(_handle, 0, LibC.SEEK_END);
                return end < 0 ? 0 : end;
            }
            // QEMU counts whole 512-byte sectors (bdrv_refresh_total_sectors rounds up).
            long size = (long)Stat(_handle, Filename).Size;
            return (size + 511) & ~511L;
        }
    }

    /// <inheritdoc />
    public override long? AllocatedSize => (long)Stat(_handle, Filename).Blocks * 512;

    /// <inheritdoc />
    public override ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        if (_direct) return DirectReadAsync(offset, buffer, cancellationToken);
        if (buffer.Length > InlineIoLimit)
        {
            // What the page cache holds is copied inline too: the thread pool hop costs more than
            // the copy, and only the part that would wait for the disk goes to the pool.
            cancellationToken.ThrowIfCancellationRequested();
            int cached = ReadCached(offset, buffer.Span);
            return cached == buffer.Length ? ValueTask.CompletedTask : ReadSlowAsync(offset + cached, buffer[cached..], cancellationToken);
        }
        // Small requests are served inline: a page-cache pread takes microseconds, less than a
        // hop through the thread pool (which a one-shot tool would otherwise have to start).
        cancellationToken.ThrowIfCancellationRequested();
        int done = 0;
        while (done < buffer.Length)
        {
            int n = RandomAccess.Read(_handle, buffer.Span[done..], offset + done);
            if (n == 0)
            {
                buffer.Span[done..].Clear();
                break;
            }
            done += n;
        }
        return ValueTask.CompletedTask;
    }

    /// <summary>Requests up to this size are done inline rather than on the thread pool.</summary>
    private const int InlineIoLimit = 64 * 1024;

    /// <summary>Set once the file's filesystem refuses RWF_NOWAIT reads, so that they are not tried again.</summary>
    private bool _noWaitUnsupported;

    /// <summary>
    /// Reads from the start of <paramref name="buffer"/> as long as the page cache has the data
    /// (preadv2 with RWF_NOWAIT); returns the bytes done. Past the end reads as zeroes. Any
    /// failure just stops: the caller's ordinary read does the rest and reports real errors.
    /// </summary>
    private unsafe int ReadCached(long offset, Span<byte> buffer)
    {
        if (_noWaitUnsupported) return 0;
        int done = 0;
        fixed (byte* start = buffer)
        {
            while (done < buffer.Length)
            {
                var iov = new LibC.IoVec { Base = start + done, Length = (nuint)(buffer.Length - done) };
                nint n = LibC.PReadV2(_handle, &iov, 1, offset + done, LibC.RWF_NOWAIT);
                if (n < 0)
                {
                    if (LibC.LastError is Errno.EOPNOTSUPP or Errno.EINVAL) _noWaitUnsupported = true;
                    break;
                }
                if (n == 0)
                {
                    buffer[done..].Clear();
                    return buffer.Length;
                }
                done += (int)n;
            }
        }
        return done;
    }

    /// <summary>Writes from this size on allocate their range before writing.</summary>
    private const int PreallocateWriteMin = 1 << 20;

    private async ValueTask ReadSlowAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken)
    {
        int done = 0;
        while (done < buffer.Length)
        {
            int n = await RandomAccess.ReadAsync(_handle, buffer[done..], offset + done, cancellationToken).ConfigureAwait(false);
            if (n == 0)
            {
                // Past the end of the file reads as zeroes, as in file-posix.
                buffer.Span[done..].Clear();
                return;
            }
            done += n;
        }
    }

    /// <inheritdoc />
    public override async ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default)
    {
        ThrowIfFenced();
        if (DetectedZeroWrite(data.Span, flags) is { } zero)
        {
            await WriteZeroesAsync(offset, data.Length, zero, cancellationToken).ConfigureAwait(false);
            return;
        }
        try
        {
            if (_direct)
            {
                await DirectWriteAsync(offset, data, cancellationToken).ConfigureAwait(false);
            }
            else if (data.Length <= InlineIoLimit)
            {
                cancellationToken.ThrowIfCancellationRequested();
                RandomAccess.Write(_handle, data.Span, offset);
            }
            else
            {
                // Allocating the range first lets the filesystem map it in one extent operation
                // instead of reserving space block by block during the copy (ext4's delayed
                // allocation costs about a third of a large write into a hole). The bytes written
                // are the same, so the file's allocation is too; a filesystem that cannot, just writes.
                if (data.Length >= PreallocateWriteMin && IsRegularFile) FAllocate(0, offset, data.Length);
                await RandomAccess.WriteAsync(_handle, data, offset, cancellationToken).ConfigureAwait(false);
            }
        }
        catch (ArgumentOutOfRangeException)
        {
            // .NET turns pwrite's EFBIG (a write past the filesystem's largest file, e.g. at an
            // offset read from a damaged qcow2 table) into this; QEMU reports the errno.
            throw new NativeIOException(Errno.EFBIG, NativeIOException.Describe(Errno.EFBIG), Filename);
        }
        finally
        {
            WriteFinished();
        }
        if ((flags & WriteFlags.Fua) != 0) await FlushAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// The alignment O_DIRECT needs of offsets, lengths and memory here (raw_probe_alignment:
    /// the smallest of 1, 512 ... 4096 bytes a direct read accepts; 4096 when any size works).
    /// </summary>
    private int DirectAlignment => _directAlignment ??= ProbeDirectAlignment();
    private int? _directAlignment;

    /// <summary>Serialises unaligned direct writes: each rewrites whole blocks around its bytes.</summary>
    private readonly SemaphoreSlim _directWriteGate = new(1, 1);

    private int ProbeDirectAlignment()
    {
        using var probe = new Copy.NativeBuffer(4096, 4096);
        foreach (int size in (ReadOnlySpan<int>)[1, 512, 1024, 2048, 4096])
        {
            try
            {
                RandomAccess.Read(_handle, probe.GetSpan()[..size], 0);
                return size == 1 ? 4096 : size;
            }
            catch (IOException)
            {
            }
        }
        return 4096;
    }

    /// <summary>
    /// A read on an O_DIRECT descriptor: whole aligned blocks into an aligned buffer, then the
    /// asked bytes copied out (bdrv_co_preadv's padding). Past the end reads as zeroes.
    /// </summary>
    private async ValueTask DirectReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken)
    {
        if (buffer.Length == 0) return;
        long align = DirectAlignment;
        long start = offset / align * align;
        long end = (offset + buffer.Length + align - 1) / align * align;
        using var bounce = new Copy.NativeBuffer(checked((int)(end - start)), (int)Math.Max(align, 4096));
        await ReadDirectBlocksAsync(bounce.Memory, start, cancellationToken).ConfigureAwait(false);
        bounce.GetSpan().Slice((int)(offset - start), buffer.Length).CopyTo(buffer.Span);
    }

    /// <summary>Reads aligned blocks; a short read ends at the end of the file, the rest is zeroes.</summary>
    private async ValueTask ReadDirectBlocksAsync(Memory<byte> blocks, long offset, CancellationToken cancellationToken)
    {
        int done = 0;
        while (done < blocks.Length)
        {
            int n = await RandomAccess.ReadAsync(_handle, blocks[done..], offset + done, cancellationToken).ConfigureAwait(false);
            done += n;
            // A read that ends off the alignment ended at the end of the file: the next would be refused.
            if (n == 0 || done % DirectAlignment != 0) break;
        }
        blocks.Span[done..].Clear();
    }

    /// <summary>
    /// A write on an O_DIRECT descriptor: the partial blocks at either edge are read first and
    /// the whole aligned range written from an aligned buffer (bdrv_padding_rmw_read). As in
    /// QEMU, a write that ends inside the last block grows the file to the block's end.
    /// </summary>
    private async ValueTask DirectWriteAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        if (data.Length == 0) return;
        long align = DirectAlignment;
        long start = offset / align * align;
        long end = (offset + data.Length + align - 1) / align * align;
        bool aligned = start == offset && end == offset + data.Length;
        using var bounce = new Copy.NativeBuffer(checked((int)(end - start)), (int)Math.Max(align, 4096));
        if (!aligned) await _directWriteGate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (!aligned)
            {
                await ReadDirectBlocksAsync(bounce.Memory[..(int)align], start, cancellationToken).ConfigureAwait(false);
                if (end - align > start)
                    await ReadDirectBlocksAsync(bounce.Memory[(int)(end - align - start)..], end - align, cancellationToken).ConfigureAwait(false);
            }
            data.Span.CopyTo(bounce.GetSpan()[(int)(offset - start)..]);
            await RandomAccess.WriteAsync(_handle, (ReadOnlyMemory<byte>)bounce.Memory, start, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            if (!aligned) _directWriteGate.Release();
        }
    }

    /// <inheritdoc />
    public override async ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags flags = ZeroFlags.None, CancellationToken cancellationToken = default)
    {
        ThrowIfFenced();
        if (length <= 0) return;
        // bdrv_co_pwrite_zeroes: only a node with discard=unmap may deallocate.
        if (!Unmap) flags &= ~ZeroFlags.MayUnmap;
        try
        {
            await ZeroRangeAsync(offset, length, flags, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            ForgetKnownData();
            WriteFinished();
        }
        if ((flags & ZeroFlags.Fua) != 0) await FlushAsync(cancellationToken).ConfigureAwait(false);
    }

    private async ValueTask ZeroRangeAsync(long offset, long length, ZeroFlags flags, CancellationToken cancellationToken)
    {
        if (IsRegularFile)
        {
            long fileLength = Length;
            // Punching keeps the size; zero-range beyond EOF would not, so only unmap inside the file.
            if ((flags & ZeroFlags.MayUnmap) != 0 && offset + length <= fileLength &&
                FAllocate(LibC.FALLOC_FL_PUNCH_HOLE | LibC.FALLOC_FL_KEEP_SIZE, offset, length) == 0)
            {
                return;
            }
            if (FAllocate(LibC.FALLOC_FL_ZERO_RANGE, offset, length) == 0) return;
        }
        if ((flags & ZeroFlags.NoFallback) != 0)
            throw new NativeIOException(Errno.ENOTSUP, LibC.StrError(Errno.ENOTSUP), Filename);
        await WriteZeroBuffersAsync(offset, length, cancellationToken).ConfigureAwait(false);
    }

    private async ValueTask WriteZeroBuffersAsync(long offset, long length, CancellationToken cancellationToken)
    {
        var zeroes = new byte[(int)Math.Min(length, 1 << 20)];
        while (length > 0)
        {
            int n = (int)Math.Min(length, zeroes.Length);
            if (_direct) await DirectWriteAsync(offset, zeroes.AsMemory(0, n), cancellationToken).ConfigureAwait(false);
            else await RandomAccess.WriteAsync(_handle, zeroes.AsMemory(0, n), offset, cancellationToken).ConfigureAwait(false);
            offset += n;
            length -= n;
        }
    }

    /// <inheritdoc />
    public override ValueTask DiscardAsync(long offset, long length, CancellationToken cancellationToken = default)
    {
        ThrowIfFenced();
        // Discard is advisory: filesystems without hole punching just keep the data, and a
        // node with discard=ignore drops it (bdrv_co_pdiscard).
        if (Unmap && IsRegularFile && length > 0) FAllocate(LibC.FALLOC_FL_PUNCH_HOLE | LibC.FALLOC_FL_KEEP_SIZE, offset, length);
        ForgetKnownData();
        WriteFinished();
        return ValueTask.CompletedTask;
    }

    /// <summary>
    /// fdatasync(2) of the descriptor, returning 0 or errno. Tests replace it to make the disk
    /// fail, which needs no root and no faulty device.
    /// </summary>
    internal Func<SafeFileHandle, int> SyncData { get; set; } = handle => LibC.FDataSync(handle) == 0 ? 0 : LibC.LastError;

    /// <summary>
    /// errno of the fdatasync that failed, or 0 (file-posix's page_cache_inconsistent). Linux may
    /// mark the pages it failed to write back clean, so the next fdatasync would succeed with the
    /// data lost: once one failed, every later flush fails with its errno. O_DIRECT writes bypass
    /// the page cache and are not affected.
    /// </summary>
    private int _pageCacheInconsistent;

    // bs->write_gen and bs->flushed_gen: counted when a write, zero write, discard or resize has
    // finished (failed or not), so a flush covers every request that completed before it began.
    private long _writeGeneration;
    private long _flushedGeneration;

    private void WriteFinished() => Interlocked.Increment(ref _writeGeneration);

    /// <summary>Whether anything was written, zeroed, discarded or resized since the open.</summary>
    public bool HasWritten => Interlocked.Read(ref _writeGeneration) != 0;

    /// <inheritdoc />
    public override ValueTask FlushAsync(CancellationToken cancellationToken = default)
    {
        ThrowIfFenced();
        if (NoFlush) return ValueTask.CompletedTask;
        // bdrv_co_flush: nothing written since the last successful flush, nothing to sync.
        long generation = Interlocked.Read(ref _writeGeneration);
        if (generation == Interlocked.Read(ref _flushedGeneration)) return ValueTask.CompletedTask;
        int errno = _pageCacheInconsistent;
        if (errno == 0)
        {
            errno = SyncData(_handle);
            if (errno == Errno.EINVAL) errno = 0;
            if (errno != 0 && !_direct) _pageCacheInconsistent = errno;
        }
        if (errno != 0) throw new NativeIOException(errno, LibC.StrError(errno), Filename);
        // Flushes may overlap: the flushed generation only moves forward.
        long flushed;
        while ((flushed = Interlocked.Read(ref _flushedGeneration)) < generation &&
               Interlocked.CompareExchange(ref _flushedGeneration, generation, flushed) != flushed)
        {
        }
        return ValueTask.CompletedTask;
    }

    /// <summary>Changes the file size (qemu-img resize, create).</summary>
    public void Truncate(long length)
    {
        ThrowIfFenced();
        bool fromEmpty = length > 0 && RandomAccess.GetLength(_handle) == 0;
        try
        {
            if (LibC.FTruncate(_handle, length) != 0) throw LibC.LastErrorException($"Failed to resize '{Filename}'", Filename);
            if (fromEmpty) AllocateFirstBlock(length);
        }
        finally
        {
            ForgetKnownData();
            WriteFinished();
        }
    }

    /// <summary>
    /// file-posix's allocate_first_block: a file grown from empty gets its first block written
    /// (zeroes: one sector when it is smaller than 4 KiB, else 4 KiB, from aligned memory so that
    /// O_DIRECT takes it), so that later alignment probing finds allocated data there; qemu-img
    /// map shows it as data. Failures are ignored, as there.
    /// </summary>
    private void AllocateFirstBlock(long length)
    {
        int size = length < 4096 ? 512 : 4096;
        try
        {
            using var zeroes = new Copy.NativeBuffer(size);
            zeroes.GetSpan().Clear();
            RandomAccess.Write(_handle, zeroes.GetSpan(), 0);
        }
        catch (IOException)
        {
        }
    }

    /// <inheritdoc />
    public override ValueTask TruncateAsync(long length, CancellationToken cancellationToken = default)
    {
        Truncate(length);
        return ValueTask.CompletedTask;
    }

    /// <summary>
    /// handle_aiocb_truncate: falloc reserves the grown part (writing zeroes where the file system
    /// cannot allocate, as posix_fallocate does), full writes it with zeroes; either way du counts it.
    /// </summary>
    public override async ValueTask TruncateAsync(long length, Preallocation preallocation, CancellationToken cancellationToken = default)
    {
        long current = Length;
        if (preallocation is not (Preallocation.Falloc or Preallocation.Full) || length <= current)
        {
            await base.TruncateAsync(length, preallocation, cancellationToken).ConfigureAwait(false);
            return;
        }
        if (preallocation == Preallocation.Falloc)
        {
            if (!Preallocate(current, length - current)) await WriteZeroesAsync(current, length - current, ZeroFlags.None, cancellationToken).ConfigureAwait(false);
            Truncate(length);
        }
        else
        {
            Truncate(length);
            // Real zeroes, not write-zeroes: a punched or unwritten range is what full preallocation must not leave.
            var zeroes = new byte[Math.Min(length - current, 1 << 20)];
            for (long pos = current; pos < length; pos += zeroes.Length)
                await WriteAsync(pos, zeroes.AsMemory(0, (int)Math.Min(zeroes.Length, length - pos)), WriteFlags.None, cancellationToken).ConfigureAwait(false);
        }
        await FlushAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Takes the lock file-posix takes while creating an image (raw_co_create): holds WRITE and
    /// RESIZE, refuses RESIZE to others, and fails like any open if another user conflicts.
    /// </summary>
    public void LockForCreate()
    {
        var request = new PermissionPair(BlockPermission.Write | BlockPermission.Resize, BlockPermission.All & ~BlockPermission.Resize);
        if (PreparePermissions(request) is { } conflict) throw conflict;
        CommitPermissions(request);
    }

    /// <summary>Ends the create-time lock the way raw_co_create does: an unlock of every lock byte.</summary>
    public void UnlockAfterCreate() => _locks?.UnlockEveryByte();

    /// <summary>Allocates a range (preallocation=falloc); false when the filesystem cannot.</summary>
    public bool Preallocate(long offset, long length)
    {
        bool done = FAllocate(0, offset, length) == 0;
        WriteFinished();
        return done;
    }

    /// <inheritdoc />
    public override ValueTask<BlockStatus> GetBlockStatusAsync(long offset, long length, CancellationToken cancellationToken = default)
    {
        if (Volatile.Read(ref _knownData) is { } known && offset >= known.Start && offset < known.End)
            return ValueTask.FromResult(new BlockStatus(Math.Min(length, known.End - offset), BlockStatusFlags.Data | BlockStatusFlags.Allocated, offset, this));
        int generation = Volatile.Read(ref _knownDataGeneration);
        long fileLength = Length;
        if (offset >= fileLength || !IsRegularFile)
            return ValueTask.FromResult(new BlockStatus(length, BlockStatusFlags.Data | BlockStatusFlags.Allocated, offset, this));
        long dataStart = LibC.LSeek(_handle, offset, LibC.SEEK_DATA);
        if (dataStart < 0)
        {
            // ENXIO: no data after offset, the rest is a hole. Other errors: report data.
            bool hole = LibC.LastError == Errno.ENXIO;
            var flags = hole ? BlockStatusFlags.Zero | BlockStatusFlags.Allocated : BlockStatusFlags.Data | BlockStatusFlags.Allocated;
            return ValueTask.FromResult(new BlockStatus(Math.Min(length, fileLength - offset), flags, offset, this));
        }
        if (dataStart > offset)
        {
            return ValueTask.FromResult(new BlockStatus(Math.Min(length, dataStart - offset),
                BlockStatusFlags.Zero | BlockStatusFlags.Allocated, offset, this));
        }
        long holeStart = LibC.LSeek(_handle, offset, LibC.SEEK_HOLE);
        if (holeStart < 0) holeStart = fileLength;
        long dataLength = holeStart - offset;
        // raw_co_block_status may not report a partial block: a data extent ending in the file's
        // partial last block (only the end of the file is an unaligned hole) covers all of it;
        // with O_DIRECT the request alignment is a block.
        if (_direct && dataLength % DirectAlignment != 0)
            dataLength = (dataLength + DirectAlignment - 1) / DirectAlignment * DirectAlignment;
        // The whole extent up to the hole is remembered, not only the part asked for: QEMU's
        // file-posix answers with it (@bytes is no limit on *pnum) and bdrv_bsc_fill keeps it,
        // so a random read on a fully allocated raw image asks lseek once, not twice per request.
        RememberData(new DataRange(offset, offset + dataLength), generation);
        return ValueTask.FromResult(new BlockStatus(Math.Min(length, dataLength), BlockStatusFlags.Data | BlockStatusFlags.Allocated, offset, this));
    }

    /// <summary>A range block status found to be data.</summary>
    private sealed record DataRange(long Start, long End);

    /// <summary>
    /// QEMU's block-status cache (bdrv_bsc_is_data/bdrv_bsc_fill, for protocol nodes): the last
    /// data range found answers queries inside it without lseek. A sequential NBD read asks
    /// block status once per request, inside the range a client's whole-image query found.
    /// Written data stays data, so only what can make holes (zero writes, discard, truncate)
    /// forgets it (bdrv_bsc_invalidate_range); changes by other processes go unseen, as in QEMU.
    /// </summary>
    private DataRange? _knownData;

    /// <summary>Counts forgettings: a query that ran across one (a discard during its lseek) must not store what it found.</summary>
    private int _knownDataGeneration;

    private void ForgetKnownData()
    {
        Interlocked.Increment(ref _knownDataGeneration);
        Volatile.Write(ref _knownData, null);
    }

    /// <summary>Stores <paramref name="range"/> unless the cache was forgotten since the query began (<paramref name="generation"/>).</summary>
    private void RememberData(DataRange range, int generation)
    {
        Volatile.Write(ref _knownData, range);
        // A forgetting between the query's start and this store: take the range back (a
        // forgetting after this check writes null itself).
        if (Volatile.Read(ref _knownDataGeneration) != generation) Interlocked.CompareExchange(ref _knownData, null, range);
    }

    /// <summary>
    /// Self-fencing: once this process may have lost its cluster lease, nothing more reaches the
    /// image (EIO, as a disk that went away), checked on the monotonic clock before each write.
    /// </summary>
    private void ThrowIfFenced()
    {
        if (_cluster?.IsFenced == true) throw new NativeIOException(Errno.EIO, NativeIOException.Describe(Errno.EIO), Filename);
    }

    /// <summary>
    /// After a fence: lets go of the local locks too (the cluster keys went with the lease), so
    /// that a later activation acquires everything afresh under a new lease.
    /// </summary>
    internal void ReleaseLocksAfterFence() => _locks?.ReleaseAll();

    private int FAllocate(int mode, long offset, long length) => LibC.FAllocate(_handle, mode, offset, length);

    /// <inheritdoc />
    protected internal override ValueTask CloseAsync()
    {
        if (_closed) return ValueTask.CompletedTask;
        _closed = true;
        try
        {
            if (_locks is not null && (_locks.LockedPerm | _locks.LockedUnshared) != 0) _locks.ReleaseAll();
        }
        catch (IOException e)
        {
            Diagnostics.Warn(e.Message);
        }
        _cluster?.Release();
        if (_posixOwner is not null) ProcessInodeTable.UnregisterPosixOwner(_posixOwner);
        ProcessInodeTable.Close(Identity, _handle);
        return ValueTask.CompletedTask;
    }
}
