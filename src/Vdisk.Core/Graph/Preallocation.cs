namespace Vdisk.Graph;

/// <summary>How much of a grown image to allocate up front (qemu-img's preallocation modes).</summary>
public enum Preallocation
{
    /// <summary>Allocate nothing.</summary>
    Off,
    /// <summary>Allocate the metadata (L2 tables and clusters), not the file blocks.</summary>
    Metadata,
    /// <summary>Metadata plus fallocate of the data clusters.</summary>
    Falloc,
    /// <summary>Metadata plus zeroes written to the data clusters.</summary>
    Full,
}
