namespace Vdisk.Permissions;

/// <summary>
/// The open flags QEMU's tools use (qemu-locking-spec §4.4), so that a vdisk verb takes
/// exactly the lock bytes its qemu-img or qemu-io twin takes.
/// </summary>
public static class AccessProfiles
{
    /// <summary><c>qemu-io IMG</c>: read-write.</summary>
    public const OpenFlags QemuIoReadWrite = OpenFlags.ReadWrite;

    /// <summary><c>qemu-io -r IMG</c>.</summary>
    public const OpenFlags QemuIoReadOnly = OpenFlags.None;

    /// <summary><c>qemu-io -r -U IMG</c>.</summary>
    public const OpenFlags QemuIoForceShare = OpenFlags.ForceShare;

    /// <summary><c>qemu-img info</c>: metadata only, no backing chain.</summary>
    public const OpenFlags ImgInfo = OpenFlags.NoIo | OpenFlags.NoBacking;

    /// <summary><c>qemu-img check</c> without repair.</summary>
    public const OpenFlags ImgCheck = OpenFlags.Check;

    /// <summary><c>qemu-img check -r</c>.</summary>
    public const OpenFlags ImgCheckRepair = OpenFlags.Check | OpenFlags.ReadWrite;

    /// <summary><c>qemu-img compare</c>, <c>map</c>, <c>measure</c>, <c>snapshot -l</c>.</summary>
    public const OpenFlags ImgRead = OpenFlags.None;

    /// <summary><c>qemu-img convert</c> source (QEMU 6.1+: refuses writers).</summary>
    public const OpenFlags ImgConvertSource = OpenFlags.NoShare;

    /// <summary><c>qemu-img commit</c>.</summary>
    public const OpenFlags ImgCommit = OpenFlags.ReadWrite | OpenFlags.Unmap;

    /// <summary><c>qemu-img resize</c>.</summary>
    public const OpenFlags ImgResize = OpenFlags.ReadWrite | OpenFlags.Resize;

    /// <summary><c>qemu-img amend</c>, <c>rebase</c>, <c>snapshot -c/-a/-d</c>.</summary>
    public const OpenFlags ImgModify = OpenFlags.ReadWrite;
}
