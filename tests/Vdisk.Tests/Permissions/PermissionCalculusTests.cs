using CsCheck;
using Vdisk.Graph;
using Vdisk.Permissions;
using Xunit;
using P = Vdisk.Permissions.BlockPermission;

namespace Vdisk.Tests.Permissions;

public class PermissionCalculusTests
{
    private static readonly Gen<P> GenPerm = Gen.Int[0, 15].Select(i => (P)i);
    private static readonly Gen<PermissionPair> GenPair = Gen.Select(GenPerm, GenPerm, (p, s) => new PermissionPair(p, s));

    [Fact]
    public void Raw_PassesEveryRequestStraightThrough()
    {
        GenPair.Sample(parent =>
        {
            var child = RawChildPermissionRule.Instance.ChildPermissions(RawChildPermissionRule.FileRole(false), NodeFlags.ReadWrite, parent);
            Assert.Equal(parent, child);
        });
    }

    [Fact]
    public void CopyOnReadFilter_PassesReadWriteResize_AndAsksWriteUnchangedUnlessInactive()
    {
        var rule = CopyOnReadChildPermissionRule.Instance;
        const P passThrough = P.ConsistentRead | P.Write | P.Resize;
        Gen.Select(GenPair, Gen.Bool).Sample((parent, inactive) =>
        {
            var flags = NodeFlags.ReadWrite | (inactive ? NodeFlags.Inactive : NodeFlags.None);
            var child = rule.ChildPermissions(ChildRole.Filtered | ChildRole.Primary, flags, parent);
            Assert.Equal((parent.Perm & passThrough) | (inactive ? P.None : P.WriteUnchanged), child.Perm);
            // What the copies write never changes guest data, so the filter always shares it.
            Assert.Equal((parent.Shared & passThrough) | P.WriteUnchanged, child.Shared);
        });
        // A plain reader through the filter: consistent read and write-unchanged, everything shared.
        Assert.Equal(new PermissionPair(P.ConsistentRead | P.WriteUnchanged, P.All),
            rule.ChildPermissions(ChildRole.Filtered | ChildRole.Primary, NodeFlags.ReadWrite, new PermissionPair(P.ConsistentRead, P.All)));
    }

    [Fact]
    public void ForceShare_SharesEverythingButKeepsHeldPermissions()
    {
        GenPair.Sample(parent =>
        {
            var child = DefaultPermissions.ApplyForceShare(DefaultPermissions.ForChild(ChildRole.Image, NodeFlags.ForceShare, parent), NodeFlags.ForceShare);
            Assert.Equal(P.All, child.Shared);
            Assert.Equal(DefaultPermissions.ForChild(ChildRole.Image, NodeFlags.ForceShare, parent).Perm, child.Perm);
        });
    }

    [Fact]
    public void ActiveQcow2_NeverSharesWriteOrResizeOfItsFile()
    {
        Gen.Select(GenPair, Gen.Bool).Sample((parent, rw) =>
        {
            var child = DefaultPermissions.ForChild(ChildRole.Image, rw ? NodeFlags.ReadWrite : NodeFlags.None, parent);
            Assert.Equal(P.None, child.Shared & (P.Write | P.Resize));
        });
    }

    [Fact]
    public void InactiveNodes_ShareWriteAndResizeAndDoNotWrite()
    {
        GenPair.Sample(parent =>
        {
            var storage = DefaultPermissions.ForChild(ChildRole.Image, NodeFlags.ReadWrite | NodeFlags.Inactive, parent with { Perm = parent.Perm & ~(P.Write | P.WriteUnchanged) });
            Assert.Equal(P.Write | P.Resize, storage.Shared & (P.Write | P.Resize));
            var cow = DefaultPermissions.ForChild(ChildRole.Cow, NodeFlags.Inactive, parent);
            Assert.Equal(P.Write | P.Resize, cow.Shared & (P.Write | P.Resize));
        });
    }

    [Fact]
    public void Cow_TakesAtMostConsistentRead()
    {
        GenPair.Sample(parent =>
        {
            var cow = DefaultPermissions.ForChild(ChildRole.Cow, NodeFlags.ReadWrite, parent);
            Assert.Equal(P.None, cow.Perm & ~P.ConsistentRead);
            Assert.Equal((parent.Shared & P.Write) != 0, (cow.Shared & P.Write) != 0);
        });
    }

    [Theory]
    [InlineData(OpenFlags.ReadWrite, P.ConsistentRead | P.Write, P.All)]
    [InlineData(OpenFlags.None, P.ConsistentRead, P.All)]
    [InlineData(OpenFlags.ReadWrite | OpenFlags.Resize, P.ConsistentRead | P.Write | P.Resize, P.All)]
    [InlineData(OpenFlags.NoIo | OpenFlags.ReadWrite, P.None, P.All)]
    [InlineData(OpenFlags.NoShare, P.ConsistentRead, P.ConsistentRead | P.WriteUnchanged)]
    public void BlkNewOpen_RequestFromFlags(OpenFlags flags, P perm, P shared) =>
        Assert.Equal(new PermissionPair(perm, shared), BackendPermissions.FromOpenFlags(flags));

    [Fact]
    public void TwoUsersOfOneNode_ConflictWithQemusMessage()
    {
        var graph = FakeGraphs.Build("raw", OpenFlags.ReadWrite);
        FakeGraphs.AttachUser(graph.Top, BackendPermissions.GuestDevice(false, true, false), "vm");
        var e = Assert.Throws<PermissionConflictException>(() =>
            FakeGraphs.AttachUser(graph.Top, BackendPermissions.FromOpenFlags(OpenFlags.ReadWrite), "tool"));
        Assert.Equal("Permission conflict on node 'raw': permissions 'write' are both required by a block device (uses node 'raw' as 'root' child) " +
            "and unshared by a block device (uses node 'raw' as 'root' child).", e.Message);
    }

    [Fact]
    public void WriteOnReadOnlyNode_IsRefused()
    {
        var graph = FakeGraphs.Build("raw", OpenFlags.None);
        var e = Assert.Throws<PermissionConflictException>(() =>
            FakeGraphs.AttachUser(graph.Top, BackendPermissions.FromOpenFlags(OpenFlags.ReadWrite)));
        Assert.Equal("Block node is read-only", e.Message);
    }

    [Fact]
    public void FailedPrepareOnOneNode_AbortsTheOthersAndRestoresEdges()
    {
        var graph = FakeGraphs.Build("overlay", OpenFlags.ReadWrite);
        var user = FakeGraphs.AttachUser(graph.Top, BackendPermissions.FromOpenFlags(OpenFlags.None));
        var fileBefore = graph.File.CumulativePermissions;
        graph.File.FailPrepare = _ => new IOException("refused");
        graph.BackingFile!.Events.Clear();
        user.Permissions = BackendPermissions.FromOpenFlags(OpenFlags.ReadWrite);
        Assert.Throws<IOException>(() => PermissionRefresh.Refresh([graph.Top]));
        Assert.Equal("abort", graph.BackingFile.Events[^1]);
        Assert.DoesNotContain(graph.BackingFile.Events, e => e.StartsWith("commit"));
        Assert.Equal(fileBefore, graph.File.CumulativePermissions);
        Assert.Equal(fileBefore, PermissionRefresh.Cumulative(graph.File));
    }

    [Fact]
    public void ConflictReturnedByOneNode_AbortsTheOthersAndRestoresEdgesWithoutThrowing()
    {
        // The same rollback as a thrown failure, when a file node returns another process's lock conflict.
        var graph = FakeGraphs.Build("overlay", OpenFlags.ReadWrite);
        var user = FakeGraphs.AttachUser(graph.Top, BackendPermissions.FromOpenFlags(OpenFlags.None));
        var fileBefore = graph.File.CumulativePermissions;
        var conflict = new Vdisk.Locking.LockConflictException("Failed to get \"write\" lock", "overlay.qcow2", 201, fromTest: true);
        graph.File.FailPrepare = _ => conflict;
        graph.BackingFile!.Events.Clear();
        user.Permissions = BackendPermissions.FromOpenFlags(OpenFlags.ReadWrite);
        Assert.Same(conflict, PermissionRefresh.TryRefresh([graph.Top]));
        Assert.Equal("abort", graph.BackingFile.Events[^1]);
        Assert.DoesNotContain(graph.BackingFile.Events, e => e.StartsWith("commit"));
        Assert.Equal(fileBefore, graph.File.CumulativePermissions);
        Assert.Equal(fileBefore, PermissionRefresh.Cumulative(graph.File));
        // The throwing form throws that conflict.
        Assert.Same(conflict, Assert.Throws<Vdisk.Locking.LockConflictException>(() => PermissionRefresh.Refresh([graph.Top])));
    }
}
