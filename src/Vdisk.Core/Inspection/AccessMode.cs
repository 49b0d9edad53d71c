using Vdisk.Permissions;

namespace Vdisk.Inspection;

/// <summary>
/// The ways of opening an image a lock verdict is given for, each defined as the request of the
/// QEMU tool that opens the image that way.
/// </summary>
public enum AccessMode
{
    /// <summary><c>qemu-io -r</c>: read-only with consistent reads.</summary>
    Read,
    /// <summary><c>qemu-io</c>: read-write.</summary>
    Write,
    /// <summary><c>qemu-img resize</c>: read-write and resize.</summary>
    Resize,
    /// <summary><c>qemu-img info</c>: metadata only.</summary>
    Info,
    /// <summary><c>qemu-io -r -U</c>: read-only, sharing everything.</summary>
    ForceShare,
}

/// <summary>Names, tools and requests of the <see cref="AccessMode"/> values.</summary>
public static class AccessModes
{
    /// <summary>Every mode, in the order reports list them.</summary>
    public static IReadOnlyList<AccessMode> All { get; } =
        [AccessMode.Write, AccessMode.Read, AccessMode.Info, AccessMode.ForceShare, AccessMode.Resize];

    /// <summary>The name on the command line and in JSON: read, write, resize, info, force-share.</summary>
    public static string Name(AccessMode mode) => mode switch
    {
        AccessMode.Read => "read",
        AccessMode.Write => "write",
        AccessMode.Resize => "resize",
        AccessMode.Info => "info",
        AccessMode.ForceShare => "force-share",
        _ => throw new ArgumentOutOfRangeException(nameof(mode), mode, null),
    };

    /// <summary>Parses a name given by <see cref="Name"/>; null when unknown.</summary>
    public static AccessMode? Parse(string name)
    {
        foreach (var mode in All)
            if (Name(mode) == name) return mode;
        return null;
    }

    /// <summary>The QEMU command line whose request the mode stands for, e.g. <c>qemu-io -r</c>.</summary>
    public static string Tool(AccessMode mode) => mode switch
    {
        AccessMode.Read => "qemu-io -r",
        AccessMode.Write => "qemu-io",
        AccessMode.Resize => "qemu-img resize",
        AccessMode.Info => "qemu-img info",
        AccessMode.ForceShare => "qemu-io -r -U",
        _ => throw new ArgumentOutOfRangeException(nameof(mode), mode, null),
    };

    /// <summary>The open flags that tool passes (<see cref="AccessProfiles"/>).</summary>
    public static OpenFlags OpenFlags(AccessMode mode) => mode switch
    {
        AccessMode.Read => AccessProfiles.QemuIoReadOnly,
        AccessMode.Write => AccessProfiles.QemuIoReadWrite,
        AccessMode.Resize => AccessProfiles.ImgResize,
        AccessMode.Info => AccessProfiles.ImgInfo,
        AccessMode.ForceShare => AccessProfiles.QemuIoForceShare,
        _ => throw new ArgumentOutOfRangeException(nameof(mode), mode, null),
    };

    /// <summary>What the mode asks of the image file when the image has <paramref name="format"/> (raw or qcow2).</summary>
    public static PermissionPair FileRequest(AccessMode mode, string format) =>
        FileNodeRequests.For(OpenFlags(mode), format);
}
