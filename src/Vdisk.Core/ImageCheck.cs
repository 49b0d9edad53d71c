namespace Vdisk;

/// <summary>What <c>check -r</c> may repair (BdrvCheckMode).</summary>
[Flags]
public enum RepairMode
{
    /// <summary>Report only.</summary>
    None = 0,
    /// <summary>Fix leaked clusters.</summary>
    Leaks = 1,
    /// <summary>Fix errors (rebuilding the refcount structure if needed).</summary>
    Errors = 2,
    /// <summary>Both.</summary>
    All = Leaks | Errors,
}

/// <summary>
/// A check that could not run to its end (qemu-img prints <see cref="Exception.Message"/> as an
/// error, then "Check failed: " and the errno's text, and exits 1 without a report).
/// </summary>
public sealed class ImageCheckException(int errno, string message) : IOException(message)
{
    /// <summary>The errno QEMU's check returns.</summary>
    public int Errno { get; } = errno;
}

/// <summary>The result of a consistency check (QEMU's BdrvCheckResult / QAPI ImageCheck) and its two renderings.</summary>
public sealed class ImageCheck
{
    /// <summary>References to clusters whose refcount is too low (data may be corrupted).</summary>
    public long Corruptions { get; set; }
    /// <summary>Clusters whose refcount is higher than their references (wasted space).</summary>
    public long Leaks { get; set; }
    /// <summary>Errors that stopped parts of the check.</summary>
    public long CheckErrors { get; set; }
    /// <summary>Corruptions repaired.</summary>
    public long CorruptionsFixed { get; set; }
    /// <summary>Leaks repaired.</summary>
    public long LeaksFixed { get; set; }
    /// <summary>One past the last used host byte, rounded to clusters.</summary>
    public long ImageEndOffset { get; set; }
    /// <summary>Guest clusters of the virtual disk.</summary>
    public long TotalClusters { get; set; }
    /// <summary>Guest clusters with a host cluster.</summary>
    public long AllocatedClusters { get; set; }
    /// <summary>Allocated guest clusters not placed right after the previous one.</summary>
    public long FragmentedClusters { get; set; }
    /// <summary>Compressed guest clusters.</summary>
    public long CompressedClusters { get; set; }

    /// <summary>A copy.</summary>
    public ImageCheck Clone() => (ImageCheck)MemberwiseClone();
}
