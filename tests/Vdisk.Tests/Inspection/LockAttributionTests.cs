using Vdisk.Inspection;
using Xunit;

namespace Vdisk.Tests.Inspection;

public class LockAttributionTests
{
    private static ProcessDescription Lookup(int pid) => new(pid, $"cmd{pid}", null);

    private static IReadOnlyList<LockHolder> Attribute(List<KernelLock> procLocks, params DescriptorLocks[] descriptors) =>
        LockAttribution.Attribute(procLocks, descriptors, Lookup, "not visible");

    [Fact]
    public void Ofd_locks_go_to_the_descriptors_whose_fdinfo_lists_them()
    {
        var procLocks = Fabricate.Ofd("100-101", "201", "100");
        var vm = new DescriptorLocks(Fabricate.Process(10, "qemu-system-x86_64"), 12, Fabricate.Ofd("100-101", "201"));
        var reader = new DescriptorLocks(Fabricate.Process(20, "qemu-io"), 4, Fabricate.Ofd("100"));
        var holders = Attribute(procLocks, reader, vm);
        Assert.Equal(2, holders.Count);
        Assert.Equal((10, 12), (holders[0].Process!.Pid, holders[0].Descriptor!.Value));
        Assert.Equal(Vdisk.Permissions.BlockPermission.Write, holders[0].Refuses);
        Assert.Equal((20, 4), (holders[1].Process!.Pid, holders[1].Descriptor!.Value));
        Assert.All(holders, h => Assert.Equal(LockHolderKind.OpenFileDescription, h.Kind));
    }

    [Fact]
    public void Descriptor_inherited_by_a_child_is_one_holder_shared_with_the_child()
    {
        // One open file description reachable from the parent and a forked child: its locks are
        // listed once in /proc/locks but in both processes' fdinfo.
        var procLocks = Fabricate.Ofd("100-101");
        var parent = new DescriptorLocks(Fabricate.Process(30, "vdisk"), 5, Fabricate.Ofd("100-101"));
        var child = new DescriptorLocks(Fabricate.Process(31, "sh"), 5, Fabricate.Ofd("100-101"));
        var holder = Assert.Single(Attribute(procLocks, child, parent));
        Assert.Equal(30, holder.Process!.Pid);
        var shared = Assert.Single(holder.SharedWith);
        Assert.Equal((31, 5), (shared.Process.Pid, shared.Descriptor));
    }

    [Fact]
    public void Two_descriptions_with_the_same_locks_are_two_holders()
    {
        var procLocks = Fabricate.Ofd("100", "100");
        var a = new DescriptorLocks(Fabricate.Process(40, "qemu-io"), 4, Fabricate.Ofd("100"));
        var b = new DescriptorLocks(Fabricate.Process(41, "qemu-io"), 4, Fabricate.Ofd("100"));
        var holders = Attribute(procLocks, a, b);
        Assert.Equal([40, 41], holders.Select(h => h.Process!.Pid));
        Assert.All(holders, h => Assert.Empty(h.SharedWith));
    }

    [Fact]
    public void Locks_no_descriptor_accounts_for_become_one_unknown_holder()
    {
        var procLocks = Fabricate.Ofd("100-101", "201", "100");
        var visible = new DescriptorLocks(Fabricate.Process(50, "qemu-io"), 4, Fabricate.Ofd("100"));
        var holders = Attribute(procLocks, visible);
        Assert.Equal(2, holders.Count);
        var unknown = holders[1];
        Assert.Equal(LockHolderKind.Unknown, unknown.Kind);
        Assert.Null(unknown.Process);
        Assert.Equal("not visible", unknown.UnknownReason);
        Assert.Equal(2, unknown.Locks.Count);
        Assert.Equal(Vdisk.Permissions.BlockPermission.Write, unknown.Refuses);
    }

    [Fact]
    public void Posix_and_flock_holders_carry_their_pid()
    {
        var procLocks = new List<KernelLock>
        {
            Fabricate.Lock(KernelLockKind.Posix, 60, "201"),
            Fabricate.Lock(KernelLockKind.Posix, 60, "100"),
            Fabricate.Lock(KernelLockKind.Flock, 70, "0-EOF", exclusive: true),
        };
        // flock's descriptor is inherited by the command it runs; the POSIX owner is not visible.
        var flockFd = new DescriptorLocks(Fabricate.Process(70, "flock"), 3, [Fabricate.Lock(KernelLockKind.Flock, 70, "0-EOF", exclusive: true)]);
        var sleepFd = new DescriptorLocks(Fabricate.Process(71, "sleep"), 3, [Fabricate.Lock(KernelLockKind.Flock, 70, "0-EOF", exclusive: true)]);
        var holders = Attribute(procLocks, sleepFd, flockFd);
        var posix = Assert.Single(holders, h => h.Kind == LockHolderKind.Posix);
        Assert.Equal(("cmd60", (int?)null), (posix.Process!.Command, posix.Descriptor));
        Assert.Equal(2, posix.Locks.Count);
        var flock = Assert.Single(holders, h => h.Kind == LockHolderKind.Flock);
        Assert.Equal((70, 3), (flock.Process!.Pid, flock.Descriptor!.Value));
        Assert.Equal(71, Assert.Single(flock.SharedWith).Process.Pid);
    }

    [Fact]
    public void Waiting_requests_are_not_holders()
    {
        var waiting = new KernelLock(KernelLockKind.Posix, true, 80, Fabricate.File, 0, long.MaxValue, Waiting: true);
        Assert.Empty(Attribute([waiting]));
    }
}
