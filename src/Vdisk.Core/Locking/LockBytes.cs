using Vdisk.Permissions;

namespace Vdisk.Locking;

/// <summary>
/// QEMU's lock byte layout (block/file-posix.c): byte <c>100+i</c> is read-locked while a
/// user holds permission bit <c>i</c>, byte <c>200+i</c> while it refuses to share it.
/// </summary>
public static class LockBytes
{
    /// <summary>RAW_LOCK_PERM_BASE.</summary>
    public const int PermBase = 100;

    /// <summary>RAW_LOCK_SHARED_BASE.</summary>
    public const int SharedBase = 200;

    /// <summary>The "holds" byte of a single permission bit.</summary>
    public static int HoldByte(BlockPermission bit) => PermBase + BitIndex(bit);

    /// <summary>The "does not share" byte of a single permission bit.</summary>
    public static int UnsharedByte(BlockPermission bit) => SharedBase + BitIndex(bit);

    /// <summary>Decodes a byte offset into (permission, isUnsharedByte), or null when it is not a QEMU lock byte.</summary>
    public static (BlockPermission Permission, bool Unshared)? Decode(long offset)
    {
        if (offset >= PermBase && offset < PermBase + BlockPermissions.BitCount)
            return (BlockPermissions.FromBit((int)(offset - PermBase)), false);
        if (offset >= SharedBase && offset < SharedBase + BlockPermissions.BitCount)
            return (BlockPermissions.FromBit((int)(offset - SharedBase)), true);
        return null;
    }

    private static int BitIndex(BlockPermission bit) => bit switch
    {
        BlockPermission.ConsistentRead => 0,
        BlockPermission.Write => 1,
        BlockPermission.WriteUnchanged => 2,
        BlockPermission.Resize => 3,
        _ => throw new ArgumentOutOfRangeException(nameof(bit), bit, "not a single permission bit"),
    };
}
