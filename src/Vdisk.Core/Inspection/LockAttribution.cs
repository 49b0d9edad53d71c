namespace Vdisk.Inspection;

/// <summary>The <c>lock:</c> lines of one descriptor's /proc/PID/fdinfo/FD.</summary>
/// <param name="Process">The process the descriptor belongs to.</param>
/// <param name="Descriptor">The descriptor number.</param>
/// <param name="Locks">Its lock lines: the locks owned by the open file description (OFD, flock)
/// or set by this process through this descriptor (POSIX).</param>
public sealed record DescriptorLocks(ProcessDescription Process, int Descriptor, IReadOnlyList<KernelLock> Locks);

/// <summary>
/// Groups the locks /proc/locks lists for one inode into holders. Pure: the /proc reading lives
/// in <see cref="LockInspector"/>.
/// </summary>
/// <remarks>
/// /proc/locks shows OFD locks with PID -1, so they are matched against the fdinfo lines of the
/// descriptors that have the file open. Each /proc/locks line is one lock of one owner, so each
/// line is given to one descriptor. A descriptor whose locks are all taken already, by a
/// descriptor with the same lock set, refers to the same open file description (inherited by
/// fork, dup'ed or passed on) and is listed as sharing it. Lines nobody accounts for belong to
/// processes that could not be inspected and become one <see cref="LockHolderKind.Unknown"/> holder.
/// POSIX and flock lines carry the PID.
/// </remarks>
public static class LockAttribution
{
    /// <summary>Builds the holders of one inode.</summary>
    /// <param name="inodeLocks">The /proc/locks lines of the inode.</param>
    /// <param name="descriptors">fdinfo of every visible descriptor that has the inode open.</param>
    /// <param name="processOf">Describes a PID that POSIX or flock lines name.</param>
    /// <param name="unknownReason">The explanation given to locks no descriptor accounts for.</param>
    public static IReadOnlyList<LockHolder> Attribute(IReadOnlyList<KernelLock> inodeLocks, IReadOnlyList<DescriptorLocks> descriptors,
        Func<int, ProcessDescription> processOf, string unknownReason)
    {
        var held = inodeLocks.Where(l => !l.Waiting).ToList();
        var ordered = descriptors.OrderBy(d => d.Process.Pid).ThenBy(d => d.Descriptor).ToList();
        var holders = new List<LockHolder>();
        holders.AddRange(AttributeOfd(held, ordered, unknownReason, out var unknown));
        holders.AddRange(AttributeByPid(held, ordered, KernelLockKind.Posix, LockHolderKind.Posix, processOf));
        holders.AddRange(AttributeByPid(held, ordered, KernelLockKind.Flock, LockHolderKind.Flock, processOf));
        if (unknown is not null) holders.Add(unknown);
        return holders;
    }

    private readonly record struct LockKey(KernelLockKind Kind, bool Exclusive, long Start, long End);

    private static LockKey Key(KernelLock l) => new(l.Kind, l.Exclusive, l.Start, l.End);

    private static List<LockHolder> AttributeOfd(List<KernelLock> held, List<DescriptorLocks> descriptors, string unknownReason, out LockHolder? unknown)
    {
        var remaining = new Dictionary<LockKey, int>();
        foreach (var l in held.Where(l => l.Kind == KernelLockKind.Ofd))
            remaining[Key(l)] = remaining.GetValueOrDefault(Key(l)) + 1;

        var groups = new List<(DescriptorLocks First, List<KernelLock> Locks, List<ProcessDescriptor> Shared)>();
        foreach (var d in descriptors)
        {
            var own = d.Locks.Where(l => l.Kind == KernelLockKind.Ofd && !l.Waiting).ToList();
            if (own.Count == 0) continue;
            var wanted = own.GroupBy(Key).ToDictionary(g => g.Key, g => g.Count());
            bool allAvailable = wanted.All(w => remaining.GetValueOrDefault(w.Key) >= w.Value);
            if (!allAvailable)
            {
                int twin = groups.FindIndex(g => SameLocks(g.Locks, own));
                if (twin >= 0)
                {
                    groups[twin].Shared.Add(new ProcessDescriptor(d.Process, d.Descriptor));
                    continue;
                }
            }
            // Taken between reading /proc/locks and fdinfo, or a first sighting: a holder either way.
            foreach (var (key, count) in wanted)
                if (remaining.TryGetValue(key, out int left)) remaining[key] = Math.Max(0, left - count);
            groups.Add((d, own, new List<ProcessDescriptor>()));
        }

        var leftovers = held.Where(l => l.Kind == KernelLockKind.Ofd).Where(l =>
        {
            if (remaining.GetValueOrDefault(Key(l)) == 0) return false;
            remaining[Key(l)]--;
            return true;
        }).ToList();
        unknown = leftovers.Count > 0 ? new LockHolder(LockHolderKind.Unknown, null, null, leftovers, unknownReason: unknownReason) : null;
        return groups.Select(g => new LockHolder(LockHolderKind.OpenFileDescription, g.First.Process, g.First.Descriptor, g.Locks, g.Shared)).ToList();
    }

    private static IEnumerable<LockHolder> AttributeByPid(List<KernelLock> held, List<DescriptorLocks> descriptors,
        KernelLockKind lockKind, LockHolderKind holderKind, Func<int, ProcessDescription> processOf)
    {
        foreach (var byPid in held.Where(l => l.Kind == lockKind).GroupBy(l => l.Pid).OrderBy(g => g.Key))
        {
            var locks = byPid.ToList();
            // Descriptors whose fdinfo lists these locks: the owner's first, then others sharing the flock.
            var through = descriptors.Where(d => d.Locks.Any(l => l.Kind == lockKind && l.Pid == byPid.Key)).ToList();
            var own = through.FirstOrDefault(d => d.Process.Pid == byPid.Key);
            var process = own?.Process ?? processOf(byPid.Key);
            var shared = through.Where(d => !ReferenceEquals(d, own)).Select(d => new ProcessDescriptor(d.Process, d.Descriptor)).ToList();
            yield return new LockHolder(holderKind, process, own?.Descriptor, locks, shared);
        }
    }

    private static bool SameLocks(List<KernelLock> a, List<KernelLock> b) =>
        a.Count == b.Count && a.Select(Key).OrderBy(k => k.Start).ThenBy(k => k.End).SequenceEqual(b.Select(Key).OrderBy(k => k.Start).ThenBy(k => k.End));
}
