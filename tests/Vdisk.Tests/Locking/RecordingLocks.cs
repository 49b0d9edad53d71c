using Vdisk.Locking;

namespace Vdisk.Tests.Locking;

/// <summary>
/// A model of the kernel's OFD byte locks for several owners of one file: every owner is an open
/// file description; a GETLK for an exclusive lock conflicts with any other owner's lock.
/// Records each owner's syscalls for golden-trace comparisons.
/// </summary>
internal sealed class SimulatedFile
{
    public readonly Dictionary<int, HashSet<Owner>> Holders = new();

    public Owner NewOwner() => new(this);

    public sealed class Owner(SimulatedFile file) : ILockPrimitive
    {
        public readonly List<string> Trace = new();

        public void LockShared(int offset)
        {
            Trace.Add($"lock {offset}");
            if (!file.Holders.TryGetValue(offset, out var set)) file.Holders[offset] = set = new();
            set.Add(this);
        }

        public void Unlock(int offset)
        {
            Trace.Add($"unlock {offset}");
            if (file.Holders.TryGetValue(offset, out var set)) set.Remove(this);
        }

        public bool IsLockedByOthers(int offset)
        {
            Trace.Add($"test {offset}");
            return file.Holders.TryGetValue(offset, out var set) && set.Any(o => !ReferenceEquals(o, this));
        }

        /// <summary>The bytes this owner holds, sorted.</summary>
        public int[] Held => file.Holders.Where(kv => kv.Value.Contains(this)).Select(kv => kv.Key).Order().ToArray();
    }
}
