using Vdisk.Graph;
using Vdisk.Native;
using Vdisk.Options;
using Vdisk.Permissions;

namespace Vdisk;

/// <summary>
/// An open disk image: the user of a block graph (QEMU's BlockBackend). It states the
/// permissions it takes and shares; the graph turns them into lock bytes on the image file.
/// Dispose it to release the locks.
/// </summary>
/// <example>
/// <code>
/// await using var image = DiskImage.Open(ImageSource.FromFile("disk.img", "raw"), AccessProfiles.QemuIoReadWrite);
/// var buffer = new byte[4096];
/// await image.ReadAsync(0, buffer);
/// </code>
/// </example>
public sealed class DiskImage : IAsyncDisposable, IDisposable
{
    private readonly BlockGraph _graph;
    private readonly GraphOpener? _opener;
    private readonly BdrvChild _root;
    private PermissionPair _requested;
    private bool _disposed;

    private DiskImage(BlockGraph graph, GraphOpener? opener, BlockNode top, OpenFlags flags, string? name)
    {
        _graph = graph;
        _opener = opener;
        OpenFlags = flags;
        Name = name;
        _root = new BdrvChild("root", ChildRole.Primary, top, this);
    }

    /// <summary>The name of this user in permission conflict messages (<c>block device 'NAME'</c>), or null.</summary>
    public string? Name { get; }

    /// <summary>The flags the image was opened with.</summary>
    public OpenFlags OpenFlags { get; }

    /// <summary>The top node (the format node, or the protocol node when opened without a format).</summary>
    public BlockNode Root => _root.Node;

    /// <summary>The graph the image's nodes live in.</summary>
    public BlockGraph Graph => _graph;

    /// <summary>
    /// Whether nothing below the image has been written since it opened: every node without
    /// children is a file that has not been written (any other protocol counts as written). A
    /// process killed now loses nothing; the kernel drops its locks with its descriptors.
    /// </summary>
    public bool HasWrittenNothing => WroteNothing(Root);

    private static bool WroteNothing(BlockNode node)
    {
        if (node.Children.Count == 0) return node is Drivers.File.FileNode { HasWritten: false };
        foreach (var child in node.Children)
            if (!WroteNothing(child.Node)) return false;
        return true;
    }

    /// <summary>Whether a read of this image can write below it (<see cref="BlockNode.ReadsMayWrite"/> anywhere in its graph).</summary>
    public bool ReadsMayWrite => MayWriteOnRead(Root);

    private static bool MayWriteOnRead(BlockNode node)
    {
        if (node.ReadsMayWrite) return true;
        foreach (var child in node.Children)
            if (MayWriteOnRead(child.Node)) return true;
        return false;
    }

    /// <summary>What this image takes and shares on its top node now (0/ALL while its node is inactive).</summary>
    public PermissionPair Permissions => _root.Permissions;

    /// <summary>What this image asks for when its node is active.</summary>
    public PermissionPair RequestedPermissions => _requested;

    /// <summary>
    /// True while the node is inactive (handed over for migration): the image then takes no
    /// permissions and refuses writes, as QEMU's disable_perm does.
    /// </summary>
    public bool IsSuspended { get; private set; }

    /// <summary>True when the image was opened for writing.</summary>
    public bool IsWritable => (Permissions.Perm & BlockPermission.Write) != 0;

    /// <summary>The guest-visible size in bytes.</summary>
    public long Length => Root.Length;

    /// <summary>
    /// Opens an image with the request QEMU derives from <paramref name="flags"/>
    /// (<see cref="BackendPermissions.FromOpenFlags"/>).
    /// </summary>
    /// <exception cref="OptionException">Malformed or unknown options.</exception>
    /// <exception cref="NativeIOException">The file could not be opened.</exception>
    /// <exception cref="Locking.LockConflictException">Another process holds a conflicting lock.</exception>
    /// <exception cref="PermissionConflictException">Another user in this process conflicts.</exception>
    public static DiskImage Open(ImageSource source, OpenFlags flags, string? name = null, BlockGraph? graph = null) =>
        Open(source, flags, BackendPermissions.FromOpenFlags(flags), name, graph);

    /// <summary>Opens an image with an explicit permission request (a device profile, say).</summary>
    public static DiskImage Open(ImageSource source, OpenFlags flags, PermissionPair request, string? name = null, BlockGraph? graph = null)
    {
        if (TryOpen(source, flags, request, out var image, name, graph) is { } conflict) throw conflict;
        return image!;
    }

    /// <summary>
    /// <see cref="Open(ImageSource, OpenFlags, string?, BlockGraph?)"/>, with a conflict with
    /// another process's locks returned instead of thrown (<paramref name="image"/> null, nothing
    /// left open): a refused open is an expected outcome of a one-shot command, and its exception
    /// dispatch was a tenth of its cost. Every other failure throws.
    /// </summary>
    public static Locking.LockConflictException? TryOpen(ImageSource source, OpenFlags flags, out DiskImage? image, string? name = null, BlockGraph? graph = null) =>
        TryOpen(source, flags, BackendPermissions.FromOpenFlags(flags), out image, name, graph);

    private static Locking.LockConflictException? TryOpen(ImageSource source, OpenFlags flags, PermissionPair request, out DiskImage? image, string? name, BlockGraph? graph)
    {
        image = null;
        graph ??= new BlockGraph();
        var opener = new GraphOpener(graph);
        var options = source.BuildOptions();
        if ((flags & OpenFlags.ForceShare) != 0)
        {
            if (ImageSource.RefusesForceShareIn(options))
                throw new OptionException("force-share conflicts with image options");
            options.Set("force-share", "on");
        }
        var top = opener.OpenTop(options, flags);
        var opened = new DiskImage(graph, opener, top, flags, name);
        bool attached = false;
        try
        {
            if (opened.TryAttach(request) is { } conflict) return conflict;
            attached = true;
        }
        finally
        {
            if (!attached) opener.CloseOpenedAsync().AsTask().GetAwaiter().GetResult();
        }
        image = opened;
        return null;
    }

    /// <summary>
    /// Attaches a new user to an existing node of a long-lived graph (an export of a daemon, say).
    /// Disposing the user detaches it and leaves the nodes open. On an inactive node the user
    /// starts suspended: it holds nothing until the node is activated.
    /// </summary>
    public static DiskImage Attach(BlockNode node, PermissionPair request, BlockGraph graph, string? name = null)
    {
        var flags = (request.Perm & (BlockPermission.Write | BlockPermission.Resize)) != 0 ? OpenFlags.ReadWrite : OpenFlags.None;
        var image = new DiskImage(graph, null, node, flags, name);
        if (image.TryAttach(request) is { } conflict) throw conflict;
        return image;
    }

    /// <summary>Opens asynchronously (the syscalls run on the thread pool).</summary>
    public static Task<DiskImage> OpenAsync(ImageSource source, OpenFlags flags, CancellationToken cancellationToken = default) =>
        Task.Run(() => Open(source, flags), cancellationToken);

    /// <summary>Adds this user's edge and takes its permissions; on a conflict the edge is gone again.</summary>
    private Locking.LockConflictException? TryAttach(PermissionPair request)
    {
        _requested = request;
        IsSuspended = Root.IsInactive;
        _root.Permissions = IsSuspended ? PermissionPair.Unused : request;
        Root.AddParentEdge(_root);
        bool refreshed = false;
        try
        {
            if (PermissionRefresh.TryRefresh([Root]) is { } conflict) return conflict;
            refreshed = true;
            return null;
        }
        finally
        {
            if (!refreshed)
            {
                Root.RemoveParentEdge(_root);
                _root.Permissions = PermissionPair.Unused;
            }
        }
    }

    /// <summary>
    /// Changes what this image takes and shares (blk_set_perm). On conflict nothing changes.
    /// </summary>
    public void SetPermissions(PermissionPair request)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (IsSuspended)
        {
            _requested = request;
            return;
        }
        Apply(request);
        _requested = request;
    }

    private void Apply(PermissionPair request)
    {
        var old = _root.Permissions;
        _root.Permissions = request;
        try
        {
            PermissionRefresh.Refresh([Root]);
        }
        catch
        {
            _root.Permissions = old;
            throw;
        }
    }

    /// <summary>QEMU's blk_root_inactivate: hold nothing, share everything, refuse writes.</summary>
    internal void Suspend()
    {
        if (IsSuspended) return;
        IsSuspended = true;
        _root.Permissions = PermissionPair.Unused;
    }

    /// <summary>
    /// QEMU's blk_root_activate: take the permissions again, first sharing everything, then
    /// narrowing to what was requested. On failure the user stays suspended.
    /// </summary>
    internal void Resume()
    {
        if (!IsSuspended) return;
        Apply(_requested with { Shared = BlockPermission.All });
        try
        {
            Apply(_requested);
        }
        catch
        {
            Apply(PermissionPair.Unused);
            throw;
        }
        IsSuspended = false;
    }

    /// <summary>Reads <c>buffer.Length</c> bytes at <paramref name="offset"/>.</summary>
    public ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        CheckRequest(offset, buffer.Length, BlockPermission.None);
        if (Root.CopyOnRead) return Vdisk.Graph.CopyOnRead.ReadAsync(Root, offset, buffer, cancellationToken);
        return Root.ReadAsync(offset, buffer, cancellationToken);
    }

    /// <summary>Writes <paramref name="data"/> at <paramref name="offset"/>.</summary>
    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default)
    {
        CheckRequest(offset, data.Length, BlockPermission.Write);
        if (Root.DetectedZeroWrite(data.Span, flags) is { } zero) return Root.WriteZeroesAsync(offset, data.Length, zero, cancellationToken);
        return Root.WriteAsync(offset, data, flags, cancellationToken);
    }

    /// <summary>Makes a range read as zeroes.</summary>
    public ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags flags = ZeroFlags.None, CancellationToken cancellationToken = default)
    {
        CheckRequest(offset, length, BlockPermission.Write);
        return Root.WriteZeroesAsync(offset, length, flags, cancellationToken);
    }

    /// <summary>Discards a range; nothing happens unless the top node has <c>discard=unmap</c> (bdrv_co_pdiscard).</summary>
    public ValueTask DiscardAsync(long offset, long length, CancellationToken cancellationToken = default)
    {
        CheckRequest(offset, length, BlockPermission.Write);
        if (!Root.Unmap)
        {
            // Dropped, as QEMU does, unless the image's cluster lock fenced: then it fails like
            // every other write, so that a client never takes a fenced node for a working one.
            if (Locking.Cluster.ClusterFencing.LockOf(Root)?.IsFenced == true)
                throw new NativeIOException(Errno.EIO, NativeIOException.Describe(Errno.EIO));
            return ValueTask.CompletedTask;
        }
        return Root.DiscardAsync(offset, length, cancellationToken);
    }

    /// <summary>
    /// blk_save_vmstate: writes the VM state area of the top node (qcow2's, past the disk), which
    /// the image's permissions do not cover: QEMU checks none for it either.
    /// </summary>
    public ValueTask SaveVmStateAsync(long position, ReadOnlyMemory<byte> data, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return Root.SaveVmStateAsync(position, data, cancellationToken);
    }

    /// <summary>blk_load_vmstate: reads the VM state area of the top node.</summary>
    public ValueTask LoadVmStateAsync(long position, Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return Root.LoadVmStateAsync(position, buffer, cancellationToken);
    }

    /// <summary>Flushes to stable storage.</summary>
    public ValueTask FlushAsync(CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return Root.FlushAsync(cancellationToken);
    }

    /// <summary>Changes the guest-visible size (blk_truncate; needs RESIZE).</summary>
    public ValueTask TruncateAsync(long length, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if ((Permissions.Perm & BlockPermission.Resize) == 0)
            throw new NativeIOException(Errno.EPERM, NativeIOException.Describe(Errno.EPERM));
        if (length < 0) throw new NativeIOException(Errno.EINVAL, "Image size cannot be negative");
        return Root.TruncateAsync(length, cancellationToken);
    }

    /// <summary>Changes the size, preallocating the grown part as <paramref name="preallocation"/> says (blk_truncate with prealloc).</summary>
    public ValueTask TruncateAsync(long length, Preallocation preallocation, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if ((Permissions.Perm & BlockPermission.Resize) == 0)
            throw new NativeIOException(Errno.EPERM, NativeIOException.Describe(Errno.EPERM));
        if (length < 0) throw new NativeIOException(Errno.EINVAL, "Image size cannot be negative");
        return Root.TruncateAsync(length, preallocation, cancellationToken);
    }

    /// <summary>True when the image's format writes compressed data (block_driver_can_compress).</summary>
    public bool SupportsCompressedWrites => Root.SupportsCompressedWrites;

    /// <summary>Writes <paramref name="data"/> compressed (blk_pwrite_compressed): whole clusters of the format.</summary>
    /// <exception cref="NativeIOException">EIO outside the image, EPERM without WRITE, ENOTSUP when the format does not compress, EINVAL when not aligned to its clusters.</exception>
    public ValueTask WriteCompressedAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken cancellationToken = default)
    {
        CheckRequest(offset, data.Length, BlockPermission.Write);
        return Root.WriteCompressedAsync(offset, data, cancellationToken);
    }

    /// <summary>The unit of compressed writes, 0 when the format does not compress (see <see cref="BlockNode.CompressedWriteUnit"/>).</summary>
    public int CompressedWriteUnit => Root.CompressedWriteUnit;

    /// <summary>Compresses one unit for <see cref="WriteCompressedUnitAsync"/>; pure, so callers may compress in parallel.</summary>
    public byte[]? CompressUnit(ReadOnlySpan<byte> unit) => Root.CompressUnit(unit);

    /// <summary>Writes one unit that <see cref="CompressUnit"/> compressed (null: plainly), through the permission gate.</summary>
    public ValueTask WriteCompressedUnitAsync(long offset, ReadOnlyMemory<byte> unit, byte[]? compressed, CancellationToken cancellationToken = default)
    {
        CheckRequest(offset, unit.Length, BlockPermission.Write);
        return Root.WriteCompressedUnitAsync(offset, unit, compressed, cancellationToken);
    }

    /// <summary>Ends a run of compressed writes (qemu-img convert -c's final zero-length compressed write).</summary>
    public ValueTask EndCompressedWritesAsync(CancellationToken cancellationToken = default)
    {
        CheckPermission(BlockPermission.Write);
        return Root.EndCompressedWritesAsync(cancellationToken);
    }

    /// <summary>
    /// Checks the image (bdrv_check), repairing what <paramref name="mode"/> allows, which needs WRITE;
    /// <paramref name="log"/> gets the lines QEMU prints while checking.
    /// </summary>
    /// <exception cref="NativeIOException">ENOTSUP: the format has no check ("This image format does not support checks").</exception>
    /// <exception cref="ImageCheckException">The check could not run to its end.</exception>
    public Task<ImageCheck> CheckAsync(RepairMode mode, Action<string>? log, CancellationToken cancellationToken = default)
    {
        CheckPermission(mode == RepairMode.None ? BlockPermission.None : BlockPermission.Write);
        return Root.CheckAsync(mode, log, cancellationToken);
    }

    /// <summary>
    /// Changes format options in place (bdrv_amend_options); <paramref name="options"/> come from
    /// the driver's amend list, <paramref name="status"/> gets (done, total).
    /// </summary>
    public ValueTask AmendAsync(QemuOpts options, bool force, Action<long, long>? status = null, CancellationToken cancellationToken = default)
    {
        CheckPermission(BlockPermission.Write);
        return Root.AmendAsync(options, force, status, cancellationToken);
    }

    /// <summary>
    /// Rewrites the backing file name and format the image stores (bdrv_change_backing_file);
    /// a null name removes both. ENOTSUP when the format stores none.
    /// </summary>
    public ValueTask ChangeBackingFileAsync(string? name, string? format, CancellationToken cancellationToken = default)
    {
        CheckPermission(BlockPermission.Write);
        return Root.ChangeBackingFileAsync(name, format, cancellationToken);
    }

    /// <summary>Empties the top layer so that everything reads from the backing file again (blk_make_empty).</summary>
    public ValueTask MakeEmptyAsync(CancellationToken cancellationToken = default)
    {
        CheckPermission(BlockPermission.Write);
        return Root.MakeEmptyAsync(cancellationToken);
    }

    /// <summary>The extents of a range of the image (see <see cref="BlockExtents.WalkAsync"/>).</summary>
    public IAsyncEnumerable<Extent> ExtentsAsync(long offset, long length, ExtentScope scope, long queryLimit = long.MaxValue, CancellationToken cancellationToken = default)
    {
        CheckRequest(offset, length, BlockPermission.None);
        return BlockExtents.WalkAsync(Root, offset, length, scope, queryLimit, cancellationToken);
    }

    /// <summary>blk_check_byte_request: requests outside the image fail with EIO, writes without WRITE with EPERM.</summary>
    private void CheckRequest(long offset, long length, BlockPermission needed)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        long size = Length; // one fstat per request, not two
        if (offset < 0 || length < 0 || offset > size || size - offset < length)
            throw new NativeIOException(Errno.EIO, NativeIOException.Describe(Errno.EIO));
        CheckPermission(needed);
    }

    /// <summary>The permission gate: a change without the permission it needs (or while suspended) fails with EPERM.</summary>
    private void CheckPermission(BlockPermission needed)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if ((needed & ~Permissions.Perm) != 0 || (IsSuspended && needed != BlockPermission.None))
            throw new NativeIOException(Errno.EPERM, NativeIOException.Describe(Errno.EPERM));
    }

    /// <summary>Detaches from the graph (COMMIT to 0/ALL, unlocking), then closes the nodes.</summary>
    public async ValueTask DisposeAsync()
    {
        if (_disposed) return;
        _disposed = true;
        Root.RemoveParentEdge(_root);
        try
        {
            PermissionRefresh.Refresh([Root]);
        }
        catch (IOException e)
        {
            Diagnostics.Warn(e.Message);
        }
        if (_opener is not null) await _opener.CloseOpenedAsync().ConfigureAwait(false);
    }

    /// <inheritdoc />
    public void Dispose() => DisposeAsync().AsTask().GetAwaiter().GetResult();
}
