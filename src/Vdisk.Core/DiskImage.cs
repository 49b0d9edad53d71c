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
        var image = new DiskImage(graph, opener, top, flags, name);
        try
        {
            image.Attach(request);
        }
        catch
        {
            opener.CloseOpenedAsync().AsTask().GetAwaiter().GetResult();
            throw;
        }
        return image;
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
        image.Attach(request);
        return image;
    }

    /// <summary>Opens asynchronously (the syscalls run on the thread pool).</summary>
    public static Task<DiskImage> OpenAsync(ImageSource source, OpenFlags flags, CancellationToken cancellationToken = default) =>
        Task.Run(() => Open(source, flags), cancellationToken);

    private void Attach(PermissionPair request)
    {
        _requested = request;
        IsSuspended = Root.IsInactive;
        _root.Permissions = IsSuspended ? PermissionPair.Unused : request;
        Root.AddParentEdge(_root);
        try
        {
            PermissionRefresh.Refresh([Root]);
        }
        catch
        {
            Root.RemoveParentEdge(_root);
            _root.Permissions = PermissionPair.Unused;
            throw;
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
        if (!Root.Unmap) return ValueTask.CompletedTask;
        return Root.DiscardAsync(offset, length, cancellationToken);
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

    /// <summary>The allocation status at <paramref name="offset"/>.</summary>
    public ValueTask<BlockStatus> GetBlockStatusAsync(long offset, long length, CancellationToken cancellationToken = default)
    {
        CheckRequest(offset, length, BlockPermission.None);
        return Root.GetBlockStatusAsync(offset, length, cancellationToken);
    }

    /// <summary>blk_check_byte_request: requests outside the image fail with EIO, writes without WRITE with EPERM.</summary>
    private void CheckRequest(long offset, long length, BlockPermission needed)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (offset < 0 || length < 0 || offset > Length || Length - offset < length)
            throw new NativeIOException(Errno.EIO, NativeIOException.Describe(Errno.EIO));
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
