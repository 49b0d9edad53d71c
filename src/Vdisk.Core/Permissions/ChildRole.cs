namespace Vdisk.Permissions;

/// <summary>QEMU's BdrvChildRole bits: what a parent uses a child node for.</summary>
[Flags]
public enum ChildRole
{
    /// <summary>No role.</summary>
    None = 0,
    /// <summary>The child stores guest data.</summary>
    Data = 1,
    /// <summary>The child stores the parent's metadata.</summary>
    Metadata = 2,
    /// <summary>The parent is a filter over the child.</summary>
    Filtered = 4,
    /// <summary>The child is a backing (copy-on-write) image.</summary>
    Cow = 8,
    /// <summary>The parent's primary child.</summary>
    Primary = 16,
    /// <summary>DATA | METADATA | PRIMARY: a format's image file (qcow2's file child).</summary>
    Image = Data | Metadata | Primary,
}

/// <summary>Node state that the permission rules look at (a subset of BDRV_O_* flags).</summary>
[Flags]
public enum NodeFlags
{
    /// <summary>Read-only, active, does I/O.</summary>
    None = 0,
    /// <summary>BDRV_O_RDWR: opened read-write.</summary>
    ReadWrite = 1,
    /// <summary>BDRV_O_NO_IO: metadata only (qemu-img info).</summary>
    NoIo = 2,
    /// <summary>BDRV_O_INACTIVE: handed over for migration; takes no locks.</summary>
    Inactive = 4,
    /// <summary>force-share=on: every child of this node is shared with everyone.</summary>
    ForceShare = 8,
    /// <summary>BDRV_O_AUTO_RDONLY: a read-write open may fall back to read-only where read-write is impossible.</summary>
    AutoReadOnly = 16,
}
