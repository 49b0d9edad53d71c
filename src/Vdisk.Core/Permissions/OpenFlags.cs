namespace Vdisk.Permissions;

/// <summary>
/// What a user of an image asks for when it opens it: the BDRV_O_* flags qemu-img, qemu-io and
/// qemu-nbd pass to blk_new_open. <see cref="BackendPermissions"/> turns them into a request.
/// </summary>
[Flags]
public enum OpenFlags
{
    /// <summary>Read-only, with consistent reads, sharing everything.</summary>
    None = 0,
    /// <summary>BDRV_O_RDWR.</summary>
    ReadWrite = 0x2,
    /// <summary>BDRV_O_RESIZE: the user may change the size.</summary>
    Resize = 0x4,
    /// <summary>BDRV_O_NO_IO: metadata only, no consistent-read permission (qemu-img info).</summary>
    NoIo = 0x8,
    /// <summary>BDRV_O_NO_SHARE: share only consistent-read and write-unchanged (qemu-img convert sources).</summary>
    NoShare = 0x10,
    /// <summary>BDRV_O_NO_BACKING: do not open the backing chain.</summary>
    NoBacking = 0x20,
    /// <summary>force-share=on (-U): share everything with everyone; read-only opens only.</summary>
    ForceShare = 0x40,
    /// <summary>BDRV_O_CHECK: opened by qemu-img check.</summary>
    Check = 0x80,
    /// <summary>BDRV_O_UNMAP: discards may unmap.</summary>
    Unmap = 0x100,
    /// <summary>BDRV_O_INACTIVE: open without taking locks (migration destination).</summary>
    Inactive = 0x200,
    /// <summary>BDRV_O_NO_FLUSH (cache=unsafe): flushes never reach the disk; writes keep their order.</summary>
    NoFlush = 0x400,
    /// <summary>BDRV_O_NOCACHE (cache=none, directsync; qemu-io -n): every node's cache.direct defaults to on (O_DIRECT).</summary>
    NoCache = 0x800,
    /// <summary>BDRV_O_COPY_ON_READ (qemu-io -C): the top node copies what reads find in its backing chain; read-write opens only.</summary>
    CopyOnRead = 0x1000,
    /// <summary>
    /// BDRV_O_SNAPSHOT (qemu-io -s, snapshot=on): the image opens read-only as the backing file of a
    /// temporary qcow2 overlay that takes every write and is deleted on close.
    /// </summary>
    Snapshot = 0x2000,
}

/// <summary>The requests users make of the top node of an image.</summary>
public static class BackendPermissions
{
    /// <summary>blk_new_open: CONSISTENT_READ (+WRITE, +RESIZE); NO_IO drops everything; NO_SHARE shares only CR and WU.</summary>
    public static PermissionPair FromOpenFlags(OpenFlags flags)
    {
        var perm = BlockPermission.ConsistentRead;
        if ((flags & OpenFlags.ReadWrite) != 0) perm |= BlockPermission.Write;
        if ((flags & OpenFlags.Resize) != 0) perm |= BlockPermission.Resize;
        if ((flags & OpenFlags.NoIo) != 0) perm = BlockPermission.None;
        var shared = (flags & OpenFlags.NoShare) != 0
            ? BlockPermission.ConsistentRead | BlockPermission.WriteUnchanged
            : BlockPermission.All;
        return new(perm, shared);
    }

    /// <summary>
    /// A guest device (blkconf_apply_backend_options): virtio-blk, scsi-hd and ide-hd are
    /// resizable; <c>share-rw=on</c> adds WRITE to what the device shares.
    /// </summary>
    public static PermissionPair GuestDevice(bool readOnly, bool resizable, bool shareRw)
    {
        var perm = BlockPermission.ConsistentRead;
        if (!readOnly) perm |= BlockPermission.Write;
        var shared = BlockPermission.ConsistentRead | BlockPermission.WriteUnchanged;
        if (resizable) shared |= BlockPermission.Resize;
        if (shareRw) shared |= BlockPermission.Write;
        return new(perm, shared);
    }

    /// <summary>
    /// A block export of qemu-storage-daemon 7.2 (blk_exp_add and the NBD export): consistent
    /// read, plus write when writable; shares everything but resize (qsd locks 100[,101] and 203).
    /// </summary>
    public static PermissionPair StorageDaemonExport(bool writable) => new(
        writable ? BlockPermission.ConsistentRead | BlockPermission.Write : BlockPermission.ConsistentRead,
        BlockPermission.All & ~BlockPermission.Resize);

    /// <summary>
    /// qemu-storage-daemon 7.2's FUSE export (blk_exp_add, then fuse_export_create): consistent
    /// read, write when writable, RESIZE when it may write or grow (truncate and fallocate
    /// resize); it shares everything.
    /// </summary>
    public static PermissionPair StorageDaemonFuseExport(bool writable, bool growable)
    {
        var perm = BlockPermission.ConsistentRead;
        if (writable) perm |= BlockPermission.Write;
        if (writable || growable) perm |= BlockPermission.Resize;
        return new PermissionPair(perm, BlockPermission.All);
    }

    /// <summary>The node flags an image opened with <paramref name="flags"/> gets.</summary>
    public static NodeFlags NodeFlagsFor(OpenFlags flags)
    {
        var node = NodeFlags.None;
        if ((flags & OpenFlags.ReadWrite) != 0) node |= NodeFlags.ReadWrite;
        if ((flags & OpenFlags.NoIo) != 0) node |= NodeFlags.NoIo;
        if ((flags & OpenFlags.ForceShare) != 0) node |= NodeFlags.ForceShare;
        if ((flags & OpenFlags.Inactive) != 0) node |= NodeFlags.Inactive;
        return node;
    }
}

/// <summary>
/// What an image's file (protocol) node is asked for, which is what decides its lock bytes:
/// the user's request passed through the format's child rule (qemu-locking-spec §4.2, §4.5).
/// Pure; the same rules the graph applies when an image is really opened.
/// </summary>
public static class FileNodeRequests
{
    /// <summary>The formats whose rules are known here.</summary>
    public static IReadOnlyList<string> Formats { get; } = ["raw", "qcow2"];

    /// <summary>
    /// The request on the file node of a <paramref name="format"/> image opened with
    /// <paramref name="flags"/>: raw passes the user's request through; qcow2 adds write and
    /// resize for read-write opens and refuses to share them.
    /// </summary>
    /// <exception cref="ArgumentException">A format other than raw or qcow2.</exception>
    public static PermissionPair For(OpenFlags flags, string format)
    {
        var top = BackendPermissions.FromOpenFlags(flags);
        var nodeFlags = BackendPermissions.NodeFlagsFor(flags);
        var request = format switch
        {
            "raw" => RawChildPermissionRule.Instance.ChildPermissions(RawChildPermissionRule.FileRole(hasWindow: false), nodeFlags, top),
            "qcow2" => DefaultChildPermissionRule.Instance.ChildPermissions(ChildRole.Image, nodeFlags, top),
            _ => throw new ArgumentException($"no permission rules for format '{format}'", nameof(format)),
        };
        // The file node inherits force-share from the format node's options.
        return DefaultPermissions.ApplyForceShare(request, nodeFlags);
    }
}
