using Vdisk.Inspection;
using Vdisk.Locking;
using Vdisk.Native;

namespace Vdisk.Tests.Inspection;

/// <summary>Fabricated kernel locks and holders, written the way /proc/locks shows them.</summary>
internal static class Fabricate
{
    public static readonly FileIdentity File = new(0xfe, 0, 4242);

    /// <summary>OFD read locks for the given byte ranges ("100-101", "201").</summary>
    public static List<KernelLock> Ofd(params string[] ranges) => ranges.Select(r => Lock(KernelLockKind.Ofd, -1, r)).ToList();

    public static KernelLock Lock(KernelLockKind kind, int pid, string range, bool exclusive = false)
    {
        var parts = range.Split('-');
        long start = long.Parse(parts[0]);
        long end = parts.Length == 1 ? start : parts[1] == "EOF" ? long.MaxValue : long.Parse(parts[1]);
        return new KernelLock(kind, exclusive, pid, File, start, end, Waiting: false);
    }

    public static ProcessDescription Process(int pid, string command) => new(pid, command, command + " args");

    /// <summary>A QEMU-style holder: one open file description of <paramref name="command"/>.</summary>
    public static LockHolder Qemu(int pid, string command, params string[] ranges) =>
        new(LockHolderKind.OpenFileDescription, Process(pid, command), 3, Ofd(ranges));
}
