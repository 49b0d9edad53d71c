using Vdisk.Locking;
using Vdisk.Permissions;
using Xunit;
using P = Vdisk.Permissions.BlockPermission;

namespace Vdisk.Tests.Locking;

/// <summary>
/// vdisk's hand-over reservation: an inactive destination locks its "does not share" bytes
/// without testing, new writers are refused, and its own activation still succeeds.
/// </summary>
public class LockReservationTests
{
    private static readonly PermissionPair Device = BackendPermissions.GuestDevice(readOnly: false, resizable: true, shareRw: false);

    private static void Apply(PermissionLockTransaction t, PermissionPair next)
    {
        t.Prepare(next);
        t.Commit(next);
    }

    [Fact]
    public void Reservation_LocksUntested_RefusesNewWriters_AndDoesNotBlockItsOwner()
    {
        var file = new SimulatedFile();
        var source = new PermissionLockTransaction(file.NewOwner(), "a.raw");
        Apply(source, Device);
        var destinationOwner = file.NewOwner();
        var destination = new PermissionLockTransaction(destinationOwner, "a.raw");

        destination.Reserve(Device.Unshared);
        Assert.Equal(["lock 201"], destinationOwner.Trace);

        // A writer (qemu-io: CR|W sharing all) is refused by the reservation even once the source is gone.
        Apply(source, PermissionPair.Unused);
        var writer = new PermissionLockTransaction(file.NewOwner(), "a.raw");
        var e = Assert.Throws<LockConflictException>(() => writer.Prepare(new PermissionPair(P.ConsistentRead | P.Write, P.All)));
        Assert.Equal("Failed to get \"write\" lock", e.Message);

        // The destination's own transaction does not see its reserved byte.
        Apply(destination, Device);
        Assert.Equal([100, 101, 201], destinationOwner.Held);
        destination.ReleaseReservation(active: true);
        Assert.Equal([100, 101, 201], destinationOwner.Held);
    }

    [Fact]
    public void Reservation_SurvivesCommitsUntilReleased()
    {
        var owner = new SimulatedFile().NewOwner();
        var t = new PermissionLockTransaction(owner, "a.raw");
        t.Reserve(P.Write | P.Resize);
        Apply(t, new PermissionPair(P.ConsistentRead, P.All));
        Assert.Equal([100, 201, 203], owner.Held);
        t.ReleaseReservation(active: true);
        Assert.Equal([100], owner.Held);
    }

    [Fact]
    public void ReleasingWhileInactive_UnlocksOnlyWhatTheReservationAdded()
    {
        var owner = new SimulatedFile().NewOwner();
        var t = new PermissionLockTransaction(owner, "a.qcow2");
        // An inactive qcow2 source keeps consistent-read and, here, byte 203.
        Apply(t, new PermissionPair(P.ConsistentRead, P.All & ~P.Resize));
        t.Reserve(P.Write | P.Resize);
        Assert.Equal([100, 201, 203], owner.Held);
        t.ReleaseReservation(active: false);
        Assert.Equal([100, 203], owner.Held);
    }

    [Fact]
    public void Closing_ReleasesTheReservationToo()
    {
        var owner = new SimulatedFile().NewOwner();
        var t = new PermissionLockTransaction(owner, "a.raw");
        t.Reserve(P.Write);
        t.ReleaseAll();
        Assert.Empty(owner.Held);
        Assert.Equal(P.None, t.Reserved);
    }
}
