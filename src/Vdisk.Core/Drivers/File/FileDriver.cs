using Vdisk.Graph;
using Vdisk.Locking;
using Vdisk.Options;

namespace Vdisk.Drivers.File;

/// <summary>
/// Options of the <c>file</c> driver and its device twins <c>host_device</c> and <c>host_cdrom</c>
/// (file-posix: one implementation; <c>file</c> opens regular files only, the others devices
/// only): filename, locking, aio, and vdisk's cluster-lock-id.
/// </summary>
public sealed class FileDriver(string name = FileDriver.FileName) : IBlockDriver
{
    /// <summary>The driver for regular files.</summary>
    public const string FileName = "file";
    /// <summary>The driver for character and block devices.</summary>
    public const string HostDeviceName = "host_device";

    /// <summary>bdrv_find_protocol's host-device detection: the driver QEMU picks for a plain filename.</summary>
    public static string ProtocolFor(string path) => Native.FileSystemEntry.IsDevice(path) ? HostDeviceName : FileName;

    /// <inheritdoc />
    public string Name => name;

    /// <inheritdoc />
    public bool IsProtocol => true;

    /// <inheritdoc />
    public BlockNode Open(NodeOpenContext context)
    {
        var o = context.Options;
        string? filename = o.TakeString("filename");
        string? lockingText = o.TakeString("locking");
        string? aio = o.TakeString("aio");
        string? clusterLockId = o.TakeString("cluster-lock-id");
        // Accepted for QEMU's command lines (vdisk keeps no page cache of its own to drop), but checked as QEMU checks it.
        o.TakeBool("drop-cache");
        if (aio is not null && aio is not ("threads" or "native" or "io_uring"))
            throw new OptionException($"Parameter 'aio' does not accept value '{aio}'");
        var locking = LockingMode.Auto;
        if (lockingText is not null)
            locking = LockingModes.Parse(lockingText) ?? throw new OptionException($"invalid parameter value: {lockingText}");
        if (string.IsNullOrEmpty(filename)) throw new OptionException("The 'file' block driver requires a file name");
        if (clusterLockId is not null) Locking.Cluster.ClusterLockSettings.ValidateLockId(clusterLockId);
        o.EnsureAllUsed(Name, isProtocol: true);
        if (filename.StartsWith("file:", StringComparison.Ordinal)) filename = filename["file:".Length..];
        return FileNode.Open(context.NodeName, filename, context.Flags, locking, context.CacheDirect, noFlush: context.CacheNoFlush,
            clusterLockId: clusterLockId, clusterSettings: context.ClusterLocks, requiredKind: Name);
    }
}
