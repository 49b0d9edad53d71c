using Vdisk.Locking;
using Vdisk.Permissions;
using Xunit;
using P = Vdisk.Permissions.BlockPermission;

namespace Vdisk.Tests.Locking;

public class LockTransactionTests
{
    private static PermissionPair Req(P perm, P shared) => new(perm, shared);

    private static void Apply(PermissionLockTransaction t, PermissionPair next)
    {
        t.Prepare(next);
        t.Commit(next);
    }

    [Fact]
    public void QemuImgInfoOnQcow2_MatchesStraceGoldenTrace()
    {
        // qemu-locking-spec §4.6: SETLK RDLCK 201, 203; GETLK 101, 103; on close UNLCK 201, 203.
        var owner = new SimulatedFile().NewOwner();
        var t = new PermissionLockTransaction(owner, "a.qcow2");
        Apply(t, Req(P.None, P.ConsistentRead | P.WriteUnchanged));
        Apply(t, PermissionPair.Unused);
        Assert.Equal(["lock 201", "lock 203", "test 101", "test 103", "unlock 201", "unlock 203"], owner.Trace);
    }

    [Fact]
    public void QemuImgCheckOnQcow2_MatchesStraceGoldenTrace()
    {
        var owner = new SimulatedFile().NewOwner();
        var t = new PermissionLockTransaction(owner, "a.qcow2");
        Apply(t, Req(P.ConsistentRead, P.ConsistentRead | P.WriteUnchanged));
        Apply(t, PermissionPair.Unused);
        Assert.Equal(["lock 100", "lock 201", "lock 203", "test 200", "test 101", "test 103", "unlock 100", "unlock 201", "unlock 203"], owner.Trace);
    }

    [Fact]
    public void LoosenOnlyChange_SkipsPrepareAndOnlyUnlocksAtCommit()
    {
        var owner = new SimulatedFile().NewOwner();
        var t = new PermissionLockTransaction(owner, "x");
        Apply(t, Req(P.ConsistentRead | P.Write, P.ConsistentRead));
        owner.Trace.Clear();
        t.Prepare(Req(P.ConsistentRead, P.All));
        Assert.Empty(owner.Trace);
        t.Commit(Req(P.ConsistentRead, P.All));
        Assert.Equal(["unlock 101", "unlock 201", "unlock 202", "unlock 203"], owner.Trace);
    }

    [Fact]
    public void WriterAgainstRunningGuestDevice_FailsWithQemusMessageAndHint()
    {
        var file = new SimulatedFile();
        var device = new PermissionLockTransaction(file.NewOwner(), "d.raw");
        Apply(device, BackendPermissions.GuestDevice(readOnly: false, resizable: true, shareRw: false));
        var writerOwner = file.NewOwner();
        var writer = new PermissionLockTransaction(writerOwner, "d.raw");
        var e = Assert.Throws<LockConflictException>(() => writer.Prepare(Req(P.ConsistentRead | P.Write, P.All)));
        Assert.Equal("Failed to get \"write\" lock", e.Message);
        Assert.Equal("Is another process using the image [d.raw]?", e.Hint);
        Assert.True(e.FromTest);
        Assert.Empty(writerOwner.Held);
    }

    [Fact]
    public void TryPrepareAgainstRunningGuestDevice_ReturnsTheConflictAndRestoresTheBytes()
    {
        var file = new SimulatedFile();
        Apply(new PermissionLockTransaction(file.NewOwner(), "d.raw"), BackendPermissions.GuestDevice(readOnly: false, resizable: true, shareRw: false));
        var writerOwner = file.NewOwner();
        var writer = new PermissionLockTransaction(writerOwner, "d.raw");
        var conflict = writer.TryPrepare(Req(P.ConsistentRead | P.Write, P.All));
        Assert.NotNull(conflict);
        Assert.Equal("Failed to get \"write\" lock", conflict.Message);
        Assert.True(conflict.FromTest);
        Assert.Empty(writerOwner.Held);
        Assert.Null(writer.TryPrepare(Req(P.ConsistentRead, P.All)));
    }

    [Fact]
    public void ReadOnlyQcow2OpenerAgainstWriter_GetsSharedWriteMessage()
    {
        var file = new SimulatedFile();
        Apply(new PermissionLockTransaction(file.NewOwner(), "a"), Req(P.ConsistentRead | P.Write | P.Resize, P.ConsistentRead | P.WriteUnchanged));
        var ro = new PermissionLockTransaction(file.NewOwner(), "a");
        var e = Assert.Throws<LockConflictException>(() => ro.Prepare(Req(P.ConsistentRead, P.ConsistentRead | P.WriteUnchanged)));
        Assert.Equal("Failed to get shared \"write\" lock", e.Message);
    }

    [Fact]
    public void FailedTightening_LeavesLockedBytesAsBefore()
    {
        // tests/unit/test-image-locking.c, step 5: a failed blk_set_perm restores the old bytes.
        var file = new SimulatedFile();
        Apply(new PermissionLockTransaction(file.NewOwner(), "x"), Req(P.ConsistentRead | P.Write, P.All));
        var bOwner = file.NewOwner();
        var b = new PermissionLockTransaction(bOwner, "x");
        Apply(b, Req(P.ConsistentRead, P.All));
        var before = bOwner.Held;
        Assert.Throws<LockConflictException>(() => b.Prepare(Req(P.ConsistentRead | P.Resize, P.WriteUnchanged)));
        Assert.Equal(before, bOwner.Held);
        Assert.Equal(Req(P.ConsistentRead, P.All), b.Committed);
    }

    [Fact]
    public void LockSyscallFailure_ReportsByteAndErrno()
    {
        var t = new PermissionLockTransaction(new FailingPrimitive(Vdisk.Native.Errno.ENOLCK), "nfs.img");
        var e = Assert.Throws<LockConflictException>(() => t.Prepare(Req(P.ConsistentRead, P.All)));
        Assert.Equal("Failed to lock byte 100: No locks available", e.Message);
        Assert.False(e.FromTest);
    }

    [Fact]
    public void BusyLockSyscall_ReportsByteWithoutErrno()
    {
        var t = new PermissionLockTransaction(new FailingPrimitive(Vdisk.Native.Errno.EAGAIN), "x");
        var e = Assert.Throws<LockConflictException>(() => t.Prepare(Req(P.ConsistentRead, P.All)));
        Assert.Equal("Failed to lock byte 100", e.Message);
    }

    private sealed class FailingPrimitive(int errno) : ILockPrimitive
    {
        public void LockShared(int offset) => throw new Vdisk.Native.NativeIOException(errno, "fail");
        public void Unlock(int offset) { }
        public bool IsLockedByOthers(int offset) => false;
    }
}
