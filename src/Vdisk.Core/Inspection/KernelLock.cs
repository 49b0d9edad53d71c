using System.Globalization;
using Vdisk.Locking;
using Vdisk.Native;

namespace Vdisk.Inspection;

/// <summary>The kind of a kernel file lock as /proc/locks names it.</summary>
public enum KernelLockKind
{
    /// <summary>Open-file-description lock (what QEMU uses); PID shows as -1.</summary>
    Ofd,
    /// <summary>Classic process-wide fcntl lock.</summary>
    Posix,
    /// <summary>Whole-file flock(2) lock.</summary>
    Flock,
    /// <summary>Lease or other kinds.</summary>
    Other,
}

/// <summary>
/// One line of /proc/locks or of a <c>lock:</c> line in /proc/PID/fdinfo/FD, e.g.
/// <c>1: OFDLCK ADVISORY  READ -1 fe:00:11657375 100 101</c>. Ranges are inclusive; the kernel
/// merges adjacent ranges of one owner, so one line may cover several QEMU lock bytes.
/// </summary>
/// <param name="Kind">OFD, POSIX, FLOCK.</param>
/// <param name="Exclusive">True for WRITE locks, false for READ.</param>
/// <param name="Pid">The owner's PID, or -1 (OFD locks).</param>
/// <param name="File">Device and inode.</param>
/// <param name="Start">First byte.</param>
/// <param name="End">Last byte, or <see cref="long.MaxValue"/> for EOF.</param>
/// <param name="Waiting">True for a blocked waiter line (<c>-&gt;</c>).</param>
public readonly record struct KernelLock(KernelLockKind Kind, bool Exclusive, int Pid, FileIdentity File, long Start, long End, bool Waiting)
{
    /// <summary>True when the range covers <paramref name="offset"/>.</summary>
    public bool Covers(long offset) => offset >= Start && offset <= End;

    /// <summary>Parses one line; null when it is not a lock line.</summary>
    public static KernelLock? Parse(string line)
    {
        var t = line.Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries);
        int i = 0;
        if (t.Length > 0 && t[0] == "lock:") i++;
        if (i < t.Length && t[i].EndsWith(':')) i++;
        bool waiting = false;
        if (i < t.Length && t[i] == "->")
        {
            waiting = true;
            i++;
        }
        if (t.Length - i < 7) return null;
        var kind = t[i] switch
        {
            "OFDLCK" => KernelLockKind.Ofd,
            "POSIX" => KernelLockKind.Posix,
            "FLOCK" => KernelLockKind.Flock,
            _ => KernelLockKind.Other,
        };
        bool exclusive = t[i + 2] == "WRITE";
        if (!int.TryParse(t[i + 3], NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int pid)) return null;
        var dev = t[i + 4].Split(':');
        if (dev.Length != 3 ||
            !uint.TryParse(dev[0], NumberStyles.HexNumber, CultureInfo.InvariantCulture, out uint major) ||
            !uint.TryParse(dev[1], NumberStyles.HexNumber, CultureInfo.InvariantCulture, out uint minor) ||
            !ulong.TryParse(dev[2], NumberStyles.None, CultureInfo.InvariantCulture, out ulong inode))
            return null;
        if (!long.TryParse(t[i + 5], NumberStyles.None, CultureInfo.InvariantCulture, out long start)) return null;
        long end = t[i + 6] == "EOF" ? long.MaxValue
            : long.TryParse(t[i + 6], NumberStyles.None, CultureInfo.InvariantCulture, out long e) ? e : -1;
        if (end < 0) return null;
        return new KernelLock(kind, exclusive, pid, new FileIdentity(major, minor, inode), start, end, waiting);
    }

    /// <summary>Every lock line of /proc/locks.</summary>
    public static List<KernelLock> ReadProcLocks(string path = "/proc/locks")
    {
        var result = new List<KernelLock>();
        foreach (var line in System.IO.File.ReadLines(path))
            if (Parse(line) is { } l) result.Add(l);
        return result;
    }

    /// <summary>The locks held through descriptor <paramref name="fd"/> of process <paramref name="pid"/> (fdinfo <c>lock:</c> lines).</summary>
    public static List<KernelLock> ReadFdInfo(int pid, int fd)
    {
        var result = new List<KernelLock>();
        foreach (var line in System.IO.File.ReadLines($"/proc/{pid}/fdinfo/{fd}"))
            if (line.StartsWith("lock:", StringComparison.Ordinal) && Parse(line) is { } l) result.Add(l);
        return result;
    }
}
