namespace Vdisk.Permissions;

/// <summary>A driver's .bdrv_child_perm: how a node of that driver asks permissions of its children.</summary>
public interface IChildPermissionRule
{
    /// <summary>The request the node makes of a child with <paramref name="role"/>.</summary>
    PermissionPair ChildPermissions(ChildRole role, NodeFlags nodeFlags, PermissionPair cumulative);
}

/// <summary>Formats that use bdrv_default_perms unchanged (qcow2: file = IMAGE, backing = COW).</summary>
public sealed class DefaultChildPermissionRule : IChildPermissionRule
{
    /// <summary>The shared instance.</summary>
    public static readonly DefaultChildPermissionRule Instance = new();

    /// <inheritdoc />
    public PermissionPair ChildPermissions(ChildRole role, NodeFlags nodeFlags, PermissionPair cumulative) =>
        DefaultPermissions.ForChild(role, nodeFlags, cumulative);
}

/// <summary>
/// raw_child_perm: the default rules, then WRITE and RESIZE replaced by exactly the parent's;
/// the net effect is that raw passes its users' requests straight to the file node.
/// </summary>
public sealed class RawChildPermissionRule : IChildPermissionRule
{
    /// <summary>The shared instance.</summary>
    public static readonly RawChildPermissionRule Instance = new();

    /// <summary>
    /// The role raw gives its file child: FILTERED|PRIMARY, or DATA|PRIMARY when an
    /// <c>offset</c> or <c>size</c> window is set (then RESIZE is not shared).
    /// </summary>
    public static ChildRole FileRole(bool hasWindow) =>
        hasWindow ? ChildRole.Data | ChildRole.Primary : ChildRole.Filtered | ChildRole.Primary;

    /// <inheritdoc />
    public PermissionPair ChildPermissions(ChildRole role, NodeFlags nodeFlags, PermissionPair cumulative)
    {
        var p = DefaultPermissions.ForChild(role, nodeFlags, cumulative);
        const BlockPermission writeResize = BlockPermission.Write | BlockPermission.Resize;
        return p with { Perm = (p.Perm & ~writeResize) | (cumulative.Perm & writeResize) };
    }
}

/// <summary>Protocol drivers have no children.</summary>
public sealed class LeafChildPermissionRule : IChildPermissionRule
{
    /// <summary>The shared instance.</summary>
    public static readonly LeafChildPermissionRule Instance = new();

    /// <inheritdoc />
    public PermissionPair ChildPermissions(ChildRole role, NodeFlags nodeFlags, PermissionPair cumulative) =>
        throw new InvalidOperationException("a protocol node has no children");
}

/// <summary>
/// block_crypto_child_perms (luks): the default rules, then WRITE and RESIZE asked exactly as the
/// parent asks them and shared whenever the parent shares them ("not fully a format driver").
/// So a luks image locks its file like raw, except that an open first reads the header with
/// consistent read alone.
/// </summary>
public sealed class CryptoChildPermissionRule : IChildPermissionRule
{
    /// <summary>The shared instance.</summary>
    public static readonly CryptoChildPermissionRule Instance = new(updatingKeys: false);

    /// <summary>block_crypto_child_perms while <c>updating_keys</c> (a luks amend): write taken, consistent read and write unshared.</summary>
    public static readonly CryptoChildPermissionRule UpdatingKeys = new(updatingKeys: true);

    private readonly bool _updatingKeys;

    private CryptoChildPermissionRule(bool updatingKeys) => _updatingKeys = updatingKeys;

    /// <inheritdoc />
    public PermissionPair ChildPermissions(ChildRole role, NodeFlags nodeFlags, PermissionPair cumulative)
    {
        var p = DefaultPermissions.ForChild(role, nodeFlags, cumulative);
        const BlockPermission writeResize = BlockPermission.Write | BlockPermission.Resize;
        var pair = new PermissionPair((p.Perm & ~writeResize) | (cumulative.Perm & writeResize), p.Shared | (cumulative.Shared & writeResize));
        // While key slots change (amend), the file is written and nobody else may read or write it.
        return _updatingKeys ? new PermissionPair(pair.Perm | BlockPermission.Write, pair.Shared & ~(BlockPermission.ConsistentRead | BlockPermission.Write)) : pair;
    }
}

/// <summary>
/// cor_child_perm (the <c>copy-on-read</c> filter): consistent read, write and resize pass
/// through; the filter always shares write-unchanged and graph-mod, and asks write-unchanged of
/// its child for the copies it writes (not while inactive: the child could not grant it).
/// </summary>
public sealed class CopyOnReadChildPermissionRule : IChildPermissionRule
{
    /// <summary>The shared instance.</summary>
    public static readonly CopyOnReadChildPermissionRule Instance = new();

    private const BlockPermission PassThrough = BlockPermission.ConsistentRead | BlockPermission.Write | BlockPermission.Resize;

    /// <inheritdoc />
    public PermissionPair ChildPermissions(ChildRole role, NodeFlags nodeFlags, PermissionPair cumulative)
    {
        var perm = cumulative.Perm & PassThrough;
        if ((nodeFlags & NodeFlags.Inactive) == 0) perm |= BlockPermission.WriteUnchanged;
        return new PermissionPair(perm, (cumulative.Shared & PassThrough) | (BlockPermission.All & ~PassThrough));
    }
}
