using Vdisk.Inspection;
using Vdisk.Permissions;
using Xunit;

namespace Vdisk.Tests.Inspection;

public class LockDecodingTests
{
    [Fact]
    public void Merged_range_in_proc_locks_decodes_to_both_permissions()
    {
        var line = KernelLock.Parse("4: OFDLCK ADVISORY  READ -1 fe:00:11657640 100 101");
        Assert.NotNull(line);
        Assert.Equal((100L, 101L), (line.Value.Start, line.Value.End));
        var holder = new LockHolder(LockHolderKind.Unknown, null, null, [line.Value]);
        Assert.Equal(BlockPermission.ConsistentRead | BlockPermission.Write, holder.Holds);
        Assert.Equal(BlockPermission.None, holder.Refuses);
        Assert.False(holder.HasOtherLocks);
    }

    [Fact]
    public void Fdinfo_lock_line_parses_like_proc_locks()
    {
        var line = KernelLock.Parse("lock:\t1: OFDLCK ADVISORY  READ -1 fe:00:11657640 201 203");
        Assert.NotNull(line);
        Assert.Equal(KernelLockKind.Ofd, line.Value.Kind);
        var holder = new LockHolder(LockHolderKind.OpenFileDescription, Fabricate.Process(7, "qemu-io"), 4, [line.Value]);
        Assert.Equal(BlockPermission.Write | BlockPermission.WriteUnchanged | BlockPermission.Resize, holder.Refuses);
        Assert.Equal(BlockPermission.None, holder.Holds);
    }

    [Fact]
    public void Range_spanning_both_groups_covers_every_byte_in_between()
    {
        // A foreign read lock over 0-EOF covers all of QEMU's bytes: it holds and refuses everything.
        var holder = new LockHolder(LockHolderKind.Posix, Fabricate.Process(9, "python3"), null,
            [Fabricate.Lock(KernelLockKind.Posix, 9, "0-EOF")]);
        Assert.Equal(BlockPermission.All, holder.Holds);
        Assert.Equal(BlockPermission.All, holder.Refuses);
        Assert.True(holder.HasOtherLocks);
    }

    [Fact]
    public void Exclusive_or_out_of_range_locks_are_marked_as_other()
    {
        Assert.True(new LockHolder(LockHolderKind.Posix, null, null, [Fabricate.Lock(KernelLockKind.Posix, 1, "201", exclusive: true)]).HasOtherLocks);
        Assert.True(new LockHolder(LockHolderKind.OpenFileDescription, null, null, Fabricate.Ofd("104")).HasOtherLocks);
        Assert.False(new LockHolder(LockHolderKind.OpenFileDescription, null, null, Fabricate.Ofd("100-103", "200-203")).HasOtherLocks);
    }

    [Fact]
    public void Flock_means_nothing_to_qemu()
    {
        var holder = new LockHolder(LockHolderKind.Flock, Fabricate.Process(5, "flock"), 3,
            [Fabricate.Lock(KernelLockKind.Flock, 5, "0-EOF", exclusive: true)]);
        Assert.False(holder.ConflictsWithQemu);
        Assert.Equal(BlockPermission.None, holder.Holds);
        Assert.Equal(BlockPermission.None, holder.Refuses);
        Assert.False(holder.Blocks(201));
    }

    [Fact]
    public void Waiting_line_is_parsed_as_waiting()
    {
        var line = KernelLock.Parse("2: -> POSIX  ADVISORY  WRITE 321 fe:00:11657640 0 EOF");
        Assert.NotNull(line);
        Assert.True(line.Value.Waiting);
        Assert.Equal(long.MaxValue, line.Value.End);
        Assert.Equal(321, line.Value.Pid);
    }

    [Theory]
    [InlineData(100, "consistent read", false)]
    [InlineData(101, "write", false)]
    [InlineData(102, "write unchanged", false)]
    [InlineData(103, "resize", false)]
    [InlineData(200, "consistent read", true)]
    [InlineData(203, "resize", true)]
    public void Byte_offsets_decode_to_permission_names(int offset, string name, bool unshared)
    {
        var decoded = Vdisk.Locking.LockBytes.Decode(offset);
        Assert.NotNull(decoded);
        Assert.Equal(name, BlockPermissions.Name(decoded.Value.Permission));
        Assert.Equal(unshared, decoded.Value.Unshared);
    }
}
