using Vdisk.Locking;
using Vdisk.Permissions;

namespace Vdisk.Inspection;

/// <summary>How a holder's locks are owned, which decides how it was found.</summary>
public enum LockHolderKind
{
    /// <summary>OFD locks (QEMU's kind): owned by one open file description, found through /proc/PID/fdinfo.</summary>
    OpenFileDescription,
    /// <summary>Classic POSIX fcntl locks: owned by a process, whose PID /proc/locks shows.</summary>
    Posix,
    /// <summary>flock(2): whole-file locks that do not interact with fcntl locks on local filesystems.</summary>
    Flock,
    /// <summary>OFD locks no visible descriptor accounts for (another user's process, or a race).</summary>
    Unknown,
    /// <summary>Cluster lock keys in etcd (<see cref="LockHolder.Cluster"/>): a holder on any host.</summary>
    Cluster,
}

/// <summary>A process as /proc shows it.</summary>
/// <param name="Pid">The process ID.</param>
/// <param name="Command">The program name (base name of argv[0], else /proc/PID/comm), or null when unreadable.</param>
/// <param name="CommandLine">argv joined with spaces, or null when unreadable or empty.</param>
public sealed record ProcessDescription(int Pid, string? Command, string? CommandLine)
{
    /// <summary><c>PID 1234 (qemu-io)</c>.</summary>
    public override string ToString() => Command is null ? $"PID {Pid}" : $"PID {Pid} ({Command})";
}

/// <summary>One descriptor of a process: where an open file description is reachable from.</summary>
/// <param name="Process">The process.</param>
/// <param name="Descriptor">The descriptor number.</param>
public readonly record struct ProcessDescriptor(ProcessDescription Process, int Descriptor);

/// <summary>
/// One owner of locks on an image file: an open file description (OFD), a process (POSIX), an
/// flock, or locks whose owner could not be seen. Its locks are decoded into QEMU's meaning:
/// which permissions it holds (bytes 100+i) and which it refuses to share (bytes 200+i).
/// </summary>
public sealed class LockHolder
{
    /// <summary>Creates a holder and decodes its locks.</summary>
    /// <param name="kind">How the locks are owned.</param>
    /// <param name="process">The owning process, or null for <see cref="LockHolderKind.Unknown"/>.</param>
    /// <param name="descriptor">The descriptor the locks are reachable through, when known.</param>
    /// <param name="locks">The holder's locks (ranges as the kernel reports them).</param>
    /// <param name="sharedWith">Other descriptors (same or other processes) referring to the same open file description or flock.</param>
    /// <param name="unknownReason">Why the owner is not known (only for <see cref="LockHolderKind.Unknown"/>).</param>
    public LockHolder(LockHolderKind kind, ProcessDescription? process, int? descriptor, IReadOnlyList<KernelLock> locks,
        IReadOnlyList<ProcessDescriptor>? sharedWith = null, string? unknownReason = null)
    {
        Kind = kind;
        Process = process;
        Descriptor = descriptor;
        Locks = locks;
        SharedWith = sharedWith ?? [];
        UnknownReason = unknownReason;
        if (ConflictsWithQemu)
        {
            foreach (var l in locks)
            {
                for (int i = 0; i < BlockPermissions.BitCount; i++)
                {
                    var bit = BlockPermissions.FromBit(i);
                    if (l.Covers(LockBytes.HoldByte(bit))) Holds |= bit;
                    if (l.Covers(LockBytes.UnsharedByte(bit))) Refuses |= bit;
                }
            }
        }
        foreach (var l in locks)
            if (!IsQemuShaped(l)) HasOtherLocks = true;
    }

    /// <summary>
    /// A holder of cluster lock keys: its bytes read like shared locks on the same bytes of a file,
    /// so verdicts and messages come from the same code as for local holders.
    /// </summary>
    public LockHolder(Locking.Cluster.ClusterHolding cluster)
        : this(LockHolderKind.Cluster, new ProcessDescription(cluster.Record.Pid, cluster.Record.Command, null), null,
            cluster.Bytes.Select(b => new KernelLock(KernelLockKind.Ofd, false, cluster.Record.Pid, default, b, b, false)).ToList())
    {
        Cluster = cluster;
    }

    /// <summary>For <see cref="LockHolderKind.Cluster"/>: the holder's record, lease and fencing revision; null otherwise.</summary>
    public Locking.Cluster.ClusterHolding? Cluster { get; }

    /// <summary>How the locks are owned.</summary>
    public LockHolderKind Kind { get; }

    /// <summary>The owning process, or null when unknown.</summary>
    public ProcessDescription? Process { get; }

    /// <summary>The descriptor through which the locks are held, when known.</summary>
    public int? Descriptor { get; }

    /// <summary>Other descriptors that refer to the same open file description (inherited or passed on).</summary>
    public IReadOnlyList<ProcessDescriptor> SharedWith { get; }

    /// <summary>The locks, as ranges (the kernel merges adjacent bytes of one owner: 100-101 is one range).</summary>
    public IReadOnlyList<KernelLock> Locks { get; }

    /// <summary>Why the owner is not known, for <see cref="LockHolderKind.Unknown"/>.</summary>
    public string? UnknownReason { get; }

    /// <summary>Permissions whose "holds" byte (100+i) is covered: what this holder uses.</summary>
    public BlockPermission Holds { get; }

    /// <summary>Permissions whose "does not share" byte (200+i) is covered: what it forbids others.</summary>
    public BlockPermission Refuses { get; }

    /// <summary>
    /// True when QEMU's probes see these locks: fcntl locks (OFD or POSIX) do, flocks do not
    /// (on local filesystems the kernel keeps the two apart).
    /// </summary>
    public bool ConflictsWithQemu => Kind != LockHolderKind.Flock;

    /// <summary>
    /// True when some lock is not one QEMU takes: an exclusive lock, or a range beyond bytes
    /// 100-103 and 200-203 (another program's lock, or QEMU 6.2 and older on byte 104/204).
    /// </summary>
    public bool HasOtherLocks { get; }

    /// <summary>True when a lock of this holder covers <paramref name="offset"/> and QEMU would see it.</summary>
    public bool Blocks(long offset, bool exclusiveOnly = false)
    {
        if (!ConflictsWithQemu) return false;
        foreach (var l in Locks)
            if (l.Covers(offset) && (!exclusiveOnly || l.Exclusive)) return true;
        return false;
    }

    /// <summary>
    /// Who this is, for sentences: <c>PID 1234 (qemu-io) fd 4</c>, <c>PID 99 (python3), POSIX lock</c>,
    /// <c>an unidentified process</c>.
    /// </summary>
    public string Describe() => Kind switch
    {
        LockHolderKind.Unknown => "an unidentified process",
        LockHolderKind.Cluster => Cluster!.Record.Describe(),
        LockHolderKind.OpenFileDescription => Descriptor is { } fd ? $"{Process} fd {fd}" : $"{Process}",
        LockHolderKind.Posix => $"{Process} (POSIX lock)",
        LockHolderKind.Flock => $"{Process} (flock)",
        _ => $"{Process}",
    };

    private static bool IsQemuShaped(KernelLock l) =>
        l.Kind is KernelLockKind.Ofd or KernelLockKind.Posix && !l.Exclusive &&
        ((l.Start >= LockBytes.PermBase && l.End < LockBytes.PermBase + BlockPermissions.BitCount) ||
         (l.Start >= LockBytes.SharedBase && l.End < LockBytes.SharedBase + BlockPermissions.BitCount));
}
