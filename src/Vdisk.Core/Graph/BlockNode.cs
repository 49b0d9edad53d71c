using Vdisk.Collections;
using Vdisk.Permissions;

namespace Vdisk.Graph;

/// <summary>Flags of a write request.</summary>
[Flags]
public enum WriteFlags
{
    /// <summary>Plain write.</summary>
    None = 0,
    /// <summary>Force unit access: the data is on stable storage when the write completes.</summary>
    Fua = 1,
}

/// <summary>Flags of a write-zeroes request.</summary>
[Flags]
public enum ZeroFlags
{
    /// <summary>Zeroes must read back; the range stays allocated.</summary>
    None = 0,
    /// <summary>The range may be deallocated (punched) if it then reads as zeroes.</summary>
    MayUnmap = 1,
    /// <summary>Fail with ENOTSUP rather than write zero buffers (NBD FAST_ZERO).</summary>
    NoFallback = 2,
    /// <summary>Force unit access.</summary>
    Fua = 4,
}

/// <summary>The blockdev option <c>detect-zeroes</c>: what a node does with writes of zero buffers.</summary>
public enum DetectZeroes
{
    /// <summary>Writes them as data.</summary>
    Off,
    /// <summary>Turns them into zero writes that keep the range allocated.</summary>
    On,
    /// <summary>Turns them into zero writes that may deallocate (needs <c>discard=unmap</c>).</summary>
    Unmap,
}

/// <summary>What a range of a node holds (QEMU's BDRV_BLOCK_* bits).</summary>
[Flags]
public enum BlockStatusFlags
{
    /// <summary>Unallocated at this layer.</summary>
    None = 0,
    /// <summary>The range holds data.</summary>
    Data = 1,
    /// <summary>The range reads as zeroes.</summary>
    Zero = 2,
    /// <summary>The range is allocated at this layer (not inherited from a backing file).</summary>
    Allocated = 4,
}

/// <summary>The status of the range starting at the queried offset.</summary>
/// <param name="Length">How many bytes from the queried offset share this status.</param>
/// <param name="Flags">Data, zero, allocated.</param>
/// <param name="HostOffset">Where the data lives in <paramref name="HostNode"/>, when known.</param>
/// <param name="HostNode">The protocol node holding the data, when known.</param>
/// <param name="Depth">Backing-chain depth the status came from (0 = this node).</param>
public readonly record struct BlockStatus(long Length, BlockStatusFlags Flags, long? HostOffset = null, BlockNode? HostNode = null, int Depth = 0);

/// <summary>
/// A node of the block graph: a driver instance (file protocol, raw or qcow2 format) with its
/// children. Permissions flow from parents to children through each driver's rule; protocol
/// nodes turn their cumulative request into lock bytes.
/// </summary>
public abstract partial class BlockNode
{
    private readonly List<BdrvChild> _children = new();
    private readonly List<BdrvChild> _parents = new();

    /// <summary>Creates a node.</summary>
    protected BlockNode(string nodeName, NodeFlags flags, string filename)
    {
        NodeName = nodeName;
        Flags = flags;
        Filename = filename;
    }

    /// <summary>The node name (given with <c>node-name=</c>, or generated like QEMU's <c>#block123</c>).</summary>
    public string NodeName { get; }

    /// <summary>The driver's name: file, raw, qcow2.</summary>
    public abstract string DriverName { get; }

    /// <summary>True for protocol drivers (file), false for formats.</summary>
    public abstract bool IsProtocol { get; }

    /// <summary>The filename QEMU shows for this node (bs->filename).</summary>
    public string Filename { get; protected set; }

    /// <summary>When the node joined its graph (larger is newer).</summary>
    internal long GraphSequence { get; set; }

    /// <summary>The node's state flags.</summary>
    public NodeFlags Flags { get; internal set; }

    /// <summary>True unless opened read-write.</summary>
    public bool IsReadOnly => (Flags & NodeFlags.ReadWrite) == 0;

    /// <summary>True while handed over (migration): the node takes no locks.</summary>
    public bool IsInactive => (Flags & NodeFlags.Inactive) != 0;

    /// <summary>
    /// <c>discard=unmap</c> (BDRV_O_UNMAP): discards reach this node's storage and zero writes
    /// may deallocate it. Without it (<c>discard=ignore</c>, the default of a blockdev-add) a
    /// discard ends here and a zero write keeps the range allocated.
    /// </summary>
    public bool Unmap { get; internal set; }

    /// <summary>
    /// bs->copy_on_read (BDRV_O_COPY_ON_READ, <c>qemu-io -C</c>): reads that users of the image
    /// make copy what the node does not hold from its backing chain (<see cref="Graph.CopyOnRead"/>).
    /// </summary>
    public bool CopyOnRead { get; internal set; }

    /// <summary>
    /// Whether a read through this node can write below it (copy-on-read copies, quorum's
    /// rewrite of outvoted children): a reader then has something to lose if killed.
    /// </summary>
    public virtual bool ReadsMayWrite => CopyOnRead;

    /// <summary>
    /// bdrv_get_cluster_size: the unit copy-on-read rounds its copies to (qcow2's cluster); 0
    /// when the driver reports none (the request alignment then, one byte for vdisk's nodes).
    /// </summary>
    public virtual long ClusterSizeForCopy => 0;

    /// <summary>The node's <c>detect-zeroes</c> option.</summary>
    public DetectZeroes DetectZeroes { get; internal set; }

    /// <summary>
    /// detect-zeroes as QEMU's bdrv_aligned_pwritev applies it: the zero-write flags that a
    /// write of <paramref name="data"/> becomes on this node, or null when it stays a write.
    /// </summary>
    public ZeroFlags? DetectedZeroWrite(ReadOnlySpan<byte> data, WriteFlags flags)
    {
        if (DetectZeroes == DetectZeroes.Off || data.IsEmpty || data.ContainsAnyExcept((byte)0)) return null;
        var zero = (flags & WriteFlags.Fua) != 0 ? ZeroFlags.Fua : ZeroFlags.None;
        if (DetectZeroes == DetectZeroes.Unmap) zero |= ZeroFlags.MayUnmap;
        return zero;
    }

    /// <summary>The edges to this node's children.</summary>
    public ListView<BdrvChild> Children => new(_children);

    /// <summary>The edges from this node's users (parent nodes and images).</summary>
    public ListView<BdrvChild> Parents => new(_parents);

    /// <summary>The committed cumulative request of all parents.</summary>
    public PermissionPair CumulativePermissions { get; internal set; } = PermissionPair.Unused;

    /// <summary>How this node's driver asks permissions of its children.</summary>
    public abstract IChildPermissionRule PermissionRule { get; }

    /// <summary>The child with the given name ("file", "backing"), or null.</summary>
    public BdrvChild? Child(string name)
    {
        foreach (var child in _children)
            if (child.Name == name) return child;
        return null;
    }

    /// <summary>
    /// Adds an edge to a child node and takes the permissions this node asks of it at once, as
    /// QEMU's bdrv_attach_child does: a read-write qcow2 node locks its file while it is being
    /// opened, before any user attaches. On a lock conflict the edge is removed again.
    /// </summary>
    protected internal BdrvChild AttachChild(string name, BlockNode child, ChildRole role)
    {
        var edge = new BdrvChild(name, role, child, this);
        _children.Add(edge);
        child._parents.Add(edge);
        try
        {
            var request = PermissionRule.ChildPermissions(role, Flags, PermissionRefresh.Cumulative(this));
            edge.Permissions = DefaultPermissions.ApplyForceShare(request, child.Flags);
            PermissionRefresh.Refresh([child]);
        }
        catch
        {
            DetachChild(edge);
            throw;
        }
        return edge;
    }

    /// <summary>
    /// Attaches every child of <paramref name="children"/> in order; when one fails (a permission
    /// conflict), the edges already made are removed again and their children's permissions (and
    /// locks) refreshed, so a node that fails to open leaves no parent behind on existing nodes.
    /// </summary>
    protected internal List<BdrvChild> AttachChildren(IEnumerable<(string Name, BlockNode Node, ChildRole Role)> children)
    {
        var edges = new List<BdrvChild>();
        try
        {
            foreach (var (name, node, role) in children) edges.Add(AttachChild(name, node, role));
        }
        catch
        {
            foreach (var edge in edges) DetachChild(edge);
            PermissionRefresh.Refresh(edges.Select(e => e.Node).ToArray());
            throw;
        }
        return edges;
    }

    /// <summary>Removes an edge to a child.</summary>
    protected internal void DetachChild(BdrvChild edge)
    {
        _children.Remove(edge);
        edge.Node._parents.Remove(edge);
    }

    internal void AddParentEdge(BdrvChild edge) => _parents.Insert(0, edge);

    internal void RemoveParentEdge(BdrvChild edge) => _parents.Remove(edge);

    /// <summary>
    /// PREPARE of a permission change (file nodes lock and test here). A conflict with another
    /// process's locks is returned, not thrown (nothing prepared is left behind); other failures
    /// throw.
    /// </summary>
    protected internal virtual Locking.LockConflictException? PreparePermissions(PermissionPair cumulative) => null;

    /// <summary>COMMIT of a permission change.</summary>
    protected internal virtual void CommitPermissions(PermissionPair cumulative) { }

    /// <summary>ABORT of a prepared permission change.</summary>
    protected internal virtual void AbortPermissions() { }

    /// <summary>
    /// The driver's step of inactivation (bdrv_inactivate's <c>.bdrv_inactivate</c>), called
    /// before the node stops locking: drivers that cache metadata write it back and mark the
    /// image clean here, because another process is about to take the image over.
    /// </summary>
    protected internal virtual void OnInactivating() { }

    /// <summary>
    /// The driver's step of activation (bdrv_co_invalidate_cache), called once the node holds
    /// its locks again: drivers that cache metadata drop it and read it afresh, because another
    /// process may have written the image meanwhile.
    /// </summary>
    protected internal virtual void OnActivated() { }

    /// <summary>
    /// The driver's bdrv_reopen_prepare for the options of a reopen that only it may take:
    /// null when it takes all of them (kept until <see cref="CommitReopen"/>), else QEMU's
    /// message. By default a driver takes none.
    /// </summary>
    protected internal virtual string? PrepareReopen(IReadOnlyDictionary<string, string?> options)
    {
        foreach (var key in options.Keys) return $"Cannot change the option '{key}'";
        return null;
    }

    /// <summary>Applies what <see cref="PrepareReopen"/> took (bdrv_reopen_commit).</summary>
    protected internal virtual void CommitReopen() { }

    /// <summary>Forgets what <see cref="PrepareReopen"/> took (bdrv_reopen_abort).</summary>
    protected internal virtual void AbortReopen() { }

    /// <summary>
    /// Locks the "does not share" bytes of <paramref name="unshared"/> without testing and keeps
    /// them until <see cref="ReleaseReservation"/> (protocol nodes only; see
    /// <see cref="Activation.Reserve"/>).
    /// </summary>
    protected internal virtual void ReserveUnshared(Permissions.BlockPermission unshared) { }

    /// <summary>Drops what <see cref="ReserveUnshared"/> locked.</summary>
    protected internal virtual void ReleaseReservation() { }

    /// <summary>The node's size in bytes.</summary>
    public abstract long Length { get; }

    /// <summary>Reads exactly <c>buffer.Length</c> bytes at <paramref name="offset"/>.</summary>
    public abstract ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken = default);

    /// <summary>Writes <paramref name="data"/> at <paramref name="offset"/>.</summary>
    public abstract ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default);

    /// <summary>
    /// Makes a range read as zeroes. A driver without a zero-write of its own gets the block
    /// layer's fallback (bdrv_co_do_pwrite_zeroes): buffers of zeroes through its write path.
    /// </summary>
    public virtual ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags flags = ZeroFlags.None, CancellationToken cancellationToken = default) =>
        Drivers.FormatIo.WriteZeroesByWritingAsync(this, offset, length, flags, cancellationToken);

    /// <summary>
    /// Discards a range (advisory: contents afterwards are unspecified). A driver without a
    /// discard completes the request doing nothing, as bdrv_co_pdiscard does.
    /// </summary>
    public virtual ValueTask DiscardAsync(long offset, long length, CancellationToken cancellationToken = default) => ValueTask.CompletedTask;

    /// <summary>
    /// Writes everything cached to stable storage. A driver with no cache of its own flushes the
    /// children it may write, as bdrv_co_flush's flush_children does.
    /// </summary>
    public virtual async ValueTask FlushAsync(CancellationToken cancellationToken = default)
    {
        foreach (var child in Children)
        {
            if ((child.Permissions.Perm & (BlockPermission.Write | BlockPermission.WriteUnchanged)) != 0)
                await child.Node.FlushAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>The status of the range at <paramref name="offset"/>, at most <paramref name="length"/> bytes.</summary>
    public abstract ValueTask<BlockStatus> GetBlockStatusAsync(long offset, long length, CancellationToken cancellationToken = default);

    /// <summary>Changes the size (needs the RESIZE permission); a driver without bdrv_co_truncate refuses with QEMU's words.</summary>
    public virtual ValueTask TruncateAsync(long length, CancellationToken cancellationToken = default) =>
        throw new Native.NativeIOException(Native.Errno.ENOTSUP, "Image format driver does not support resize");

    /// <summary>Bytes the node occupies on the host (qemu-img's "disk size"), or null when unknown.</summary>
    public virtual long? AllocatedSize => Children.Count > 0 ? Children[0].Node.AllocatedSize : null;

    /// <summary>
    /// True when a newly created image reads as zeroes everywhere (bdrv_has_zero_init), so
    /// qemu-img convert may skip writing zeroes to it. Formats say so; raw asks its file; an
    /// NBD export may hold anything.
    /// </summary>
    public virtual bool HasZeroInit => true;

    /// <summary>
    /// True when a range the node does not hold reads as zeroes once no backing file is below
    /// it (QEMU's drivers with supports_backing, and every vdisk format that reports such
    /// ranges). A null node's unallocated ranges read as nothing in particular.
    /// </summary>
    public virtual bool UnallocatedReadsAsZeroes => true;

    /// <summary>
    /// True when the driver answers bdrv_get_info (raw asks its file): qemu-img info prints
    /// "dirty-flag" only then, so an image over NBD has none.
    /// </summary>
    public virtual bool HasDriverInfo => Children.Count == 0 || Children[0].Node.HasDriverInfo;

    /// <summary>
    /// bdrv_debug_event: a format announces that it is about to do <paramref name="e"/> on this
    /// node (its file child). Only a blkdebug node reacts (injecting errors, changing state,
    /// suspending the request at a breakpoint); every other node ignores it.
    /// </summary>
    public virtual ValueTask DebugEventAsync(BlkdebugEvent e) => ValueTask.CompletedTask;

    /// <summary>
    /// The node a filter passes every request to (bdrv_filter_bs), or null for formats and
    /// protocols. Walks through the backing chain step over it as over a backing file.
    /// </summary>
    public virtual BlockNode? FilteredNode => null;

    /// <summary>The child a filter or format keeps its data in (bdrv_primary_child), or null.</summary>
    public BdrvChild? PrimaryChild => _children.FirstOrDefault(c => (c.Role & ChildRole.Primary) != 0);

    /// <summary>
    /// The filename relative backing names are resolved against (bdrv_dirname): that of the node
    /// at the bottom of the primary children, so a filter's or format's own json: filename (or
    /// a <c>blkdebug:</c> one) never gets in the way.
    /// </summary>
    /// <remarks>
    /// Null where bdrv_dirname fails: a driver that refuses (<see cref="HasDirname"/>), or a
    /// bottom node known only by a json: filename (<see cref="DirnameDriver"/> names the node).
    /// </remarks>
    public string? PathBase
    {
        get
        {
            var node = DirnameNode;
            return node.HasDirname && !node.Filename.StartsWith(Options.JsonOptions.Prefix, StringComparison.Ordinal) ? node.Filename : null;
        }
    }

    /// <summary>The driver named by bdrv_dirname's refusal ("Cannot generate a base directory for DRIVER nodes").</summary>
    public string DirnameDriver => DirnameNode.DirnameRefusalName;

    /// <summary>How bdrv_dirname's refusal names this node's driver: its name, unless the driver words its own refusal (NBD).</summary>
    protected virtual string DirnameRefusalName => DriverName;

    /// <summary>The node bdrv_dirname ends at: the first down the primary children that refuses, or the bottom one.</summary>
    private BlockNode DirnameNode
    {
        get
        {
            var node = this;
            while (node.HasDirname && node.PrimaryChild is { } child) node = child.Node;
            return node;
        }
    }

    /// <summary>False for drivers without a directory: quorum and blkverify (children in several places), NBD (export names are no paths).</summary>
    protected virtual bool HasDirname => true;

    /// <summary>Releases the node's own resources (children are closed by the graph).</summary>
    protected internal virtual ValueTask CloseAsync() => ValueTask.CompletedTask;

    /// <inheritdoc />
    public override string ToString() => $"{DriverName} node '{NodeName}' ({Filename})";
}

/// <summary>
/// An edge of the graph (QEMU's BdrvChild): a parent (a node or an image's backend) uses a
/// child node in a role, with the permissions it currently takes and shares.
/// </summary>
public sealed class BdrvChild
{
    internal BdrvChild(string name, ChildRole role, BlockNode node, object parent)
    {
        Name = name;
        Role = role;
        Node = node;
        Parent = parent;
    }

    /// <summary>The child's name in its parent: "file", "backing", or "root" for an image's backend.</summary>
    public string Name { get; }

    /// <summary>The role bits.</summary>
    public ChildRole Role { get; }

    /// <summary>The child node.</summary>
    public BlockNode Node { get; }

    /// <summary>The parent: a <see cref="BlockNode"/> or a <see cref="DiskImage"/>.</summary>
    public object Parent { get; }

    /// <summary>What the parent takes and shares on this edge.</summary>
    public PermissionPair Permissions { get; internal set; } = PermissionPair.Unused;

    /// <summary>QEMU's bdrv_child_user_desc: "node 'x'" or "block device 'x'".</summary>
    public string DescribeParent() => Parent switch
    {
        BlockNode n => $"node '{n.NodeName}'",
        DiskImage img when img.Name is not null => $"block device '{img.Name}'",
        _ => "a block device",
    };
}
