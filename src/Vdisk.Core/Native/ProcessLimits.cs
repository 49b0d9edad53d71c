namespace Vdisk.Native;

/// <summary>Process resource limits a long-running holder of many images needs.</summary>
public static class ProcessLimits
{
    /// <summary>
    /// Raises the soft limit on open descriptors to the hard limit, as QEMU does at start-up
    /// (every image node keeps one descriptor open, and each locks through it). Returns the
    /// new soft limit, or null when the limits could not be read or changed.
    /// </summary>
    public static unsafe ulong? RaiseOpenFileLimit()
    {
        RLimit limit;
        if (LibC.GetRLimit(LibC.RLIMIT_NOFILE, &limit) != 0) return null;
        if (limit.Current >= limit.Maximum) return limit.Current;
        limit.Current = limit.Maximum;
        return LibC.SetRLimit(LibC.RLIMIT_NOFILE, &limit) == 0 ? limit.Current : null;
    }
}
