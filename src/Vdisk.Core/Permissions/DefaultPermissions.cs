namespace Vdisk.Permissions;

/// <summary>
/// QEMU's bdrv_default_perms and its three branches (filter, cow, storage): the permissions a
/// parent node asks of a child, from the parent's own cumulative request. Pure.
/// </summary>
public static class DefaultPermissions
{
    /// <summary>
    /// Dispatches on the role as QEMU does: FILTERED first, then COW, then DATA/METADATA.
    /// </summary>
    /// <param name="role">The child's role.</param>
    /// <param name="parentFlags">The parent node's flags (RDWR, NO_IO, INACTIVE).</param>
    /// <param name="parent">The parent's cumulative request (perm P, shared S).</param>
    public static PermissionPair ForChild(ChildRole role, NodeFlags parentFlags, PermissionPair parent)
    {
        if ((role & ChildRole.Filtered) != 0) return ForFilter(parent);
        if ((role & ChildRole.Cow) != 0) return ForCow(parentFlags, parent);
        if ((role & (ChildRole.Data | ChildRole.Metadata)) != 0) return ForStorage(role, parentFlags, parent);
        throw new ArgumentException($"child role {role} has no default permissions", nameof(role));
    }

    /// <summary>
    /// bdrv_filter_default_perms: a filter only forwards requests, so its child is asked for what
    /// the parent takes and shares what the parent shares. Bits outside the passthrough set (none
    /// since QEMU 7.0) mean nothing to a filter, so it shares them.
    /// </summary>
    public static PermissionPair ForFilter(PermissionPair parent) => new(
        parent.Perm & BlockPermissions.Passthrough,
        (parent.Shared & BlockPermissions.Passthrough) | BlockPermissions.Unchanged);

    /// <summary>bdrv_default_perms_for_cow: a backing file is read consistently and may be shared for writes only if the parent shares writes.</summary>
    public static PermissionPair ForCow(NodeFlags parentFlags, PermissionPair parent)
    {
        // A backing file is only ever read (for clusters the overlay does not have), and only
        // consistently if the parent itself needs consistent reads.
        var perm = parent.Perm & BlockPermission.ConsistentRead;
        // Readers and content-preserving writers cannot change what the overlay reads through.
        var shared = BlockPermission.ConsistentRead | BlockPermission.WriteUnchanged;
        // A parent that copes with its guest data changing under it copes with a backing file
        // that is written or resized by someone else too.
        if ((parent.Shared & BlockPermission.Write) != 0) shared |= BlockPermission.Write | BlockPermission.Resize;
        // An inactive node does no I/O: the process that owns the image may write and resize it.
        if ((parentFlags & NodeFlags.Inactive) != 0) shared |= BlockPermission.Write | BlockPermission.Resize;
        return new(perm, shared);
    }

    /// <summary>bdrv_default_perms_for_storage: a format's file child (metadata and/or data).</summary>
    public static PermissionPair ForStorage(ChildRole role, NodeFlags parentFlags, PermissionPair parent)
    {
        // The guest's requests reach the file as they are, as through a filter; the rules below add to that.
        var (perm, shared) = ForFilter(parent);
        bool inactive = (parentFlags & NodeFlags.Inactive) != 0;
        if ((role & ChildRole.Metadata) != 0)
        {
            // A writable format updates its metadata (refcounts, tables, header flags) and grows
            // the file as it allocates, even while the guest only reads.
            bool writable = (parentFlags & NodeFlags.ReadWrite) != 0 && !inactive;
            if (writable) perm |= BlockPermission.Write | BlockPermission.Resize;
            // The format must read its own metadata correctly, unless the node is opened for no I/O at all.
            if ((parentFlags & NodeFlags.NoIo) == 0) perm |= BlockPermission.ConsistentRead;
            // Another writer or resizer would change metadata under the format's cached copy and corrupt the image.
            shared &= ~(BlockPermission.Write | BlockPermission.Resize);
        }
        if ((role & ChildRole.Data) != 0)
        {
            // The format may rely on the file's size (recorded in its metadata, or fixed-size pieces).
            shared &= ~BlockPermission.Resize;
            // Content-preserving writes for the guest (copy-on-read) are real writes on the file.
            if ((perm & BlockPermission.WriteUnchanged) != 0) perm |= BlockPermission.Write;
            // Writing may mean allocating past the end of the file, which grows it.
            if ((perm & BlockPermission.Write) != 0) perm |= BlockPermission.Resize;
        }
        // An inactive node does no I/O: the process that owns the image may write and resize it.
        if (inactive) shared |= BlockPermission.Write | BlockPermission.Resize;
        return new(perm, shared);
    }

    /// <summary>
    /// bdrv_child_perm's last step: a child node opened with force-share (inherited from its
    /// parent's options) is shared with everyone.
    /// </summary>
    public static PermissionPair ApplyForceShare(PermissionPair request, NodeFlags childFlags) =>
        (childFlags & NodeFlags.ForceShare) != 0 ? request with { Shared = BlockPermission.All } : request;
}
