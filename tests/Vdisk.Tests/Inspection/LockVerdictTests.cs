using CsCheck;
using Vdisk.Inspection;
using Vdisk.Locking;
using Vdisk.Permissions;
using Xunit;

namespace Vdisk.Tests.Inspection;

public class LockVerdictTests
{
    // Holders as QEMU 7.2 leaves them (qemu-locking-spec §4.5, checked with /proc/locks).
    private static readonly Dictionary<string, string[]> Holders = new()
    {
        ["qemu-io qcow2 rw"] = ["100-101", "103", "201", "203"],
        ["qemu-io qcow2 -r"] = ["100", "201", "203"],
        ["qemu-io qcow2 -r -U"] = ["100"],
        ["qemu-io raw rw"] = ["100-101"],
        ["virtio-blk raw"] = ["100-101", "201"],
        ["qemu-nbd raw"] = ["100-101", "203"],
        ["qemu-img info qcow2"] = ["201", "203"],
    };

    // Expected outcome per (holder, mode, format): "ok" or QEMU's message with the byte it fails at.
    [Theory]
    [InlineData("qemu-io qcow2 rw", AccessMode.Write, "qcow2", "Failed to get \"write\" lock@201")]
    [InlineData("qemu-io qcow2 rw", AccessMode.Read, "qcow2", "Failed to get shared \"write\" lock@101")]
    [InlineData("qemu-io qcow2 rw", AccessMode.Info, "qcow2", "Failed to get shared \"write\" lock@101")]
    [InlineData("qemu-io qcow2 rw", AccessMode.ForceShare, "qcow2", "ok")]
    [InlineData("qemu-io qcow2 rw", AccessMode.Resize, "qcow2", "Failed to get \"write\" lock@201")]
    [InlineData("qemu-io qcow2 -r", AccessMode.Write, "qcow2", "Failed to get \"write\" lock@201")]
    [InlineData("qemu-io qcow2 -r", AccessMode.Read, "qcow2", "ok")]
    [InlineData("qemu-io qcow2 -r", AccessMode.Info, "qcow2", "ok")]
    [InlineData("qemu-io qcow2 -r", AccessMode.ForceShare, "qcow2", "ok")]
    [InlineData("qemu-io qcow2 -r", AccessMode.Resize, "qcow2", "Failed to get \"write\" lock@201")]
    [InlineData("qemu-io qcow2 -r -U", AccessMode.Write, "qcow2", "ok")]
    [InlineData("qemu-io qcow2 -r -U", AccessMode.Resize, "qcow2", "ok")]
    [InlineData("qemu-io qcow2 -r -U", AccessMode.Info, "qcow2", "ok")]
    [InlineData("qemu-io raw rw", AccessMode.Write, "raw", "ok")]
    [InlineData("qemu-io raw rw", AccessMode.Resize, "raw", "ok")]
    [InlineData("qemu-io raw rw", AccessMode.Read, "qcow2", "Failed to get shared \"write\" lock@101")]
    [InlineData("virtio-blk raw", AccessMode.Write, "raw", "Failed to get \"write\" lock@201")]
    [InlineData("virtio-blk raw", AccessMode.Read, "raw", "ok")]
    [InlineData("virtio-blk raw", AccessMode.Info, "raw", "ok")]
    [InlineData("virtio-blk raw", AccessMode.ForceShare, "raw", "ok")]
    [InlineData("virtio-blk raw", AccessMode.Resize, "raw", "Failed to get \"write\" lock@201")]
    [InlineData("qemu-nbd raw", AccessMode.Write, "raw", "ok")]
    [InlineData("qemu-nbd raw", AccessMode.Resize, "raw", "Failed to get \"resize\" lock@203")]
    [InlineData("qemu-img info qcow2", AccessMode.Write, "qcow2", "Failed to get \"write\" lock@201")]
    [InlineData("qemu-img info qcow2", AccessMode.Read, "qcow2", "ok")]
    public void Verdict_matches_qemu(string holderName, AccessMode mode, string format, string expected)
    {
        var holder = Fabricate.Qemu(1234, "qemu", Holders[holderName]);
        var v = LockVerdict.Evaluate([holder], AccessModes.FileRequest(mode, format));
        Assert.Equal(expected, v.Admitted ? "ok" : $"{v.Error}@{v.Offset}");
        if (!v.Admitted)
        {
            Assert.Same(holder, Assert.Single(v.Blockers));
            Assert.Contains("PID 1234 (qemu)", v.Reason);
        }
        else
        {
            Assert.Empty(v.Blockers);
        }
    }

    [Fact]
    public void Refused_bytes_are_tested_before_held_bytes_each_in_bit_order()
    {
        // A refuses consistent read and write; B holds write. A write open that refuses write
        // (qcow2) trips over 200 first, although 201 and 101 conflict too.
        var a = Fabricate.Qemu(1, "a", "200-201");
        var b = Fabricate.Qemu(2, "b", "101");
        var v = LockVerdict.Evaluate([b, a], AccessModes.FileRequest(AccessMode.Write, "qcow2"));
        Assert.Equal("Failed to get \"consistent read\" lock", v.Error);
        Assert.Equal(200, v.Offset);
        Assert.Equal(LockFailureKind.RefusedPermission, v.Failure);
        Assert.Same(a, Assert.Single(v.Blockers));
    }

    [Fact]
    public void Refused_resize_wins_over_held_write()
    {
        // qcow2 resize takes resize (tests 203) and refuses write (tests 101): 203 comes first.
        var holdsWrite = Fabricate.Qemu(1, "writer", "101");
        var refusesResize = Fabricate.Qemu(2, "nbd", "203");
        var v = LockVerdict.Evaluate([holdsWrite, refusesResize], AccessModes.FileRequest(AccessMode.Resize, "qcow2"));
        Assert.Equal("Failed to get \"resize\" lock", v.Error);
        Assert.Equal(BlockPermission.Resize, v.Permission);
    }

    [Fact]
    public void Held_permission_conflict_names_the_holder()
    {
        var v = LockVerdict.Evaluate([Fabricate.Qemu(77, "qemu-io", "100-101")], AccessModes.FileRequest(AccessMode.Info, "qcow2"));
        Assert.Equal(LockFailureKind.HeldPermission, v.Failure);
        Assert.Equal("Failed to get shared \"write\" lock", v.Error);
        Assert.Equal("PID 77 (qemu-io) fd 3 holds \"write\" (lock byte 101), which this open refuses to share.", v.Reason);
    }

    [Fact]
    public void Exclusive_foreign_lock_fails_at_taking_the_first_lock_byte()
    {
        var python = new LockHolder(LockHolderKind.Posix, Fabricate.Process(55, "python3"), null,
            [Fabricate.Lock(KernelLockKind.Posix, 55, "0-EOF", exclusive: true)]);
        var write = LockVerdict.Evaluate([python], AccessModes.FileRequest(AccessMode.Write, "raw"));
        Assert.Equal("Failed to lock byte 100", write.Error);
        Assert.Equal(LockFailureKind.ExclusiveLock, write.Failure);
        Assert.Contains("exclusive lock over byte 100", write.Reason);
        // qemu-img info on raw takes and tests nothing; on qcow2 it locks 201 first.
        Assert.True(LockVerdict.Evaluate([python], AccessModes.FileRequest(AccessMode.Info, "raw")).Admitted);
        Assert.Equal("Failed to lock byte 201", LockVerdict.Evaluate([python], AccessModes.FileRequest(AccessMode.Info, "qcow2")).Error);
    }

    [Fact]
    public void Shared_foreign_posix_lock_on_201_refuses_writers()
    {
        var posix = new LockHolder(LockHolderKind.Posix, Fabricate.Process(56, "python3"), null, [Fabricate.Lock(KernelLockKind.Posix, 56, "201")]);
        var v = LockVerdict.Evaluate([posix], AccessModes.FileRequest(AccessMode.Write, "raw"));
        Assert.Equal("Failed to get \"write\" lock", v.Error);
        Assert.Contains("(POSIX lock)", v.Reason);
    }

    [Fact]
    public void Flock_never_blocks()
    {
        var flock = new LockHolder(LockHolderKind.Flock, Fabricate.Process(9, "flock"), 3, [Fabricate.Lock(KernelLockKind.Flock, 9, "0-EOF", exclusive: true)]);
        foreach (var mode in AccessModes.All)
            Assert.True(LockVerdict.Evaluate([flock], AccessModes.FileRequest(mode, "qcow2")).Admitted);
    }

    [Fact]
    public void Known_holder_is_named_before_unknown_one()
    {
        var unknown = new LockHolder(LockHolderKind.Unknown, null, null, Fabricate.Ofd("201"), unknownReason: "not visible");
        var known = Fabricate.Qemu(5, "qemu-system-x86_64", "100-101", "201");
        var v = LockVerdict.Evaluate([unknown, known], AccessModes.FileRequest(AccessMode.Write, "raw"));
        Assert.Equal([known, unknown], v.Blockers);
        Assert.StartsWith("PID 5 (qemu-system-x86_64) fd 3 and one other holder refuses", v.Reason);
    }

    [Fact]
    public void Unknown_holder_alone_still_blocks()
    {
        var unknown = new LockHolder(LockHolderKind.Unknown, null, null, Fabricate.Ofd("201"), unknownReason: "not visible");
        var v = LockVerdict.Evaluate([unknown], AccessModes.FileRequest(AccessMode.Write, "raw"));
        Assert.False(v.Admitted);
        Assert.StartsWith("An unidentified process refuses to share \"write\"", v.Reason);
    }

    [Fact]
    public void Request_that_tests_nothing_is_admitted_with_that_reason()
    {
        var v = LockVerdict.Evaluate([Fabricate.Qemu(1, "x", "100-103", "200-203")], AccessModes.FileRequest(AccessMode.Info, "raw"));
        Assert.True(v.Admitted);
        Assert.Contains("tests no lock byte", v.Reason);
    }

    /// <summary>
    /// For any QEMU-style holders and any request: blocked exactly when some holder refuses a
    /// permission the request takes or holds one it refuses, and the message is the first such
    /// conflict in QEMU's order (taken permissions by bit, then refused permissions by bit).
    /// </summary>
    [Fact]
    public void Verdict_agrees_with_the_permission_algebra()
    {
        var perm = Gen.Int[0, 15].Select(i => (BlockPermission)i);
        var holderGen = Gen.Select(perm, perm, (h, r) => (Holds: h, Refuses: r));
        Gen.Select(holderGen.Array[0, 4], perm, perm).Sample((holders, take, share) =>
        {
            var built = holders.Select((h, i) => new LockHolder(LockHolderKind.OpenFileDescription, Fabricate.Process(i + 1, "p"), 3,
                BlockPermissions.Bits(h.Holds).Select(b => Fabricate.Lock(KernelLockKind.Ofd, -1, LockBytes.HoldByte(b).ToString()))
                    .Concat(BlockPermissions.Bits(h.Refuses).Select(b => Fabricate.Lock(KernelLockKind.Ofd, -1, LockBytes.UnsharedByte(b).ToString())))
                    .ToList())).ToList();
            var request = new PermissionPair(take, share);
            var allRefused = holders.Aggregate(BlockPermission.None, (a, h) => a | h.Refuses);
            var allHeld = holders.Aggregate(BlockPermission.None, (a, h) => a | h.Holds);
            string? expected = null;
            foreach (var bit in BlockPermissions.Bits(take & allRefused)) { expected = $"Failed to get \"{BlockPermissions.Name(bit)}\" lock"; break; }
            if (expected is null)
                foreach (var bit in BlockPermissions.Bits(request.Unshared & allHeld)) { expected = $"Failed to get shared \"{BlockPermissions.Name(bit)}\" lock"; break; }
            var v = LockVerdict.Evaluate(built, request);
            return v.Error == expected && v.Admitted == (expected is null) && v.Blockers.All(b => b.Blocks(v.Offset!.Value));
        });
    }
}
