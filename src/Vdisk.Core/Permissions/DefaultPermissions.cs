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

    /// <summary>bdrv_filter_default_perms: pass the passthrough bits through.</summary>
    public static PermissionPair ForFilter(PermissionPair parent) => new(
        parent.Perm & BlockPermissions.Passthrough,
        (parent.Shared & BlockPermissions.Passthrough) | BlockPermissions.Unchanged);

    /// <summary>bdrv_default_perms_for_cow: a backing file is read consistently and may be shared for writes only if the parent shares writes.</summary>
    public static PermissionPair ForCow(NodeFlags parentFlags, PermissionPair parent)
    {
        var perm = parent.Perm & BlockPermission.ConsistentRead;
        var shared = BlockPermission.ConsistentRead | BlockPermission.WriteUnchanged;
        if ((parent.Shared & BlockPermission.Write) != 0) shared |= BlockPermission.Write | BlockPermission.Resize;
        if ((parentFlags & NodeFlags.Inactive) != 0) shared |= BlockPermission.Write | BlockPermission.Resize;
        return new(perm, shared);
    }

    /// <summary>bdrv_default_perms_for_storage: a format's file child (metadata and/or data).</summary>
    public static PermissionPair ForStorage(ChildRole role, NodeFlags parentFlags, PermissionPair parent)
    {
        var (perm, shared) = ForFilter(parent);
        bool inactive = (parentFlags & NodeFlags.Inactive) != 0;
        if ((role & ChildRole.Metadata) != 0)
        {
            bool writable = (parentFlags & NodeFlags.ReadWrite) != 0 && !inactive;
            if (writable) perm |= BlockPermission.Write | BlockPermission.Resize;
            if ((parentFlags & NodeFlags.NoIo) == 0) perm |= BlockPermission.ConsistentRead;
            shared &= ~(BlockPermission.Write | BlockPermission.Resize);
        }
        if ((role & ChildRole.Data) != 0)
        {
            shared &= ~BlockPermission.Resize;
            if ((perm & BlockPermission.WriteUnchanged) != 0) perm |= BlockPermission.Write;
            if ((perm & BlockPermission.Write) != 0) perm |= BlockPermission.Resize;
        }
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
