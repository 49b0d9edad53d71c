using Vdisk.Locking;
using Vdisk.Permissions;
using Vdisk.Tests.Locking;
using Xunit;

namespace Vdisk.Tests.Permissions;

/// <summary>
/// Every row of qemu-locking-spec §4.5 "Resulting file-node lock bytes", computed through the
/// real permission refresh over raw, qcow2 and overlay graphs, then through the real lock
/// transaction: the bytes locked and the bytes tested, in QEMU's order.
/// </summary>
public class LockByteTableTests
{
    public static TheoryData<string, string, string, string, string> Rows => new()
    {
        // row name, format, opener, locked bytes, tested bytes
        { "qemu-io RW", "qcow2", "rw", "100,101,103,201,203", "200,201,203,101,103" },
        { "qemu-img commit", "qcow2", "commit", "100,101,103,201,203", "200,201,203,101,103" },
        { "qemu-img resize", "qcow2", "resize", "100,101,103,201,203", "200,201,203,101,103" },
        { "qemu-io -r / check / map / compare", "qcow2", "ro", "100,201,203", "200,101,103" },
        { "qemu-io -r -U", "qcow2", "ro-U", "100", "200" },
        { "qemu-img info", "qcow2", "info", "201,203", "101,103" },
        { "qemu-img info -U", "qcow2", "info-U", "", "" },
        { "qemu-img info on raw", "raw", "info", "", "" },
        { "qemu-io RW on raw", "raw", "rw", "100,101", "200,201" },
        { "qemu-io -r on raw", "raw", "ro", "100", "200" },
        { "qemu-img resize on raw", "raw", "resize", "100,101,103", "200,201,203" },
        { "convert source raw", "raw", "convert", "100,201,203", "200,101,103" },
        { "convert source qcow2", "qcow2", "convert", "100,201,203", "200,101,103" },
        { "convert -U source raw", "raw", "convert-U", "100", "200" },
        { "guest device RW qcow2", "qcow2", "device", "100,101,103,201,203", "200,201,203,101,103" },
        { "guest device RW qcow2 share-rw", "qcow2", "device-share-rw", "100,101,103,201,203", "200,201,203,101,103" },
        { "guest device RW raw", "raw", "device", "100,101,201", "200,201,101" },
        { "guest device RW raw share-rw", "raw", "device-share-rw", "100,101", "200,201" },
        { "read-only CD device raw", "raw", "cdrom", "100,201,203", "200,101,103" },
        { "raw with offset (RW)", "raw-window", "rw", "100,101,203", "200,201,103" },
    };

    private static (OpenFlags Flags, PermissionPair Request) Opener(string opener)
    {
        OpenFlags f = opener switch
        {
            "rw" => AccessProfiles.QemuIoReadWrite,
            "ro" => AccessProfiles.QemuIoReadOnly,
            "ro-U" => AccessProfiles.QemuIoForceShare,
            "info" => AccessProfiles.ImgInfo,
            "info-U" => AccessProfiles.ImgInfo | OpenFlags.ForceShare,
            "commit" => AccessProfiles.ImgCommit,
            "resize" => AccessProfiles.ImgResize,
            "convert" => AccessProfiles.ImgConvertSource,
            "convert-U" => AccessProfiles.ImgConvertSource | OpenFlags.ForceShare,
            "device" or "device-share-rw" => OpenFlags.ReadWrite,
            "cdrom" => OpenFlags.None,
            _ => throw new ArgumentException(opener),
        };
        var request = opener switch
        {
            "device" => BackendPermissions.GuestDevice(readOnly: false, resizable: true, shareRw: false),
            "device-share-rw" => BackendPermissions.GuestDevice(readOnly: false, resizable: true, shareRw: true),
            "cdrom" => BackendPermissions.GuestDevice(readOnly: true, resizable: false, shareRw: false),
            _ => BackendPermissions.FromOpenFlags(f),
        };
        return (f, request);
    }

    internal static (string Locked, string Tested) LocksFor(PermissionPair filePerms)
    {
        var owner = new SimulatedFile().NewOwner();
        var t = new PermissionLockTransaction(owner, "img");
        t.Prepare(filePerms);
        t.Commit(filePerms);
        string locked = string.Join(",", owner.Held);
        string tested = string.Join(",", owner.Trace.Where(s => s.StartsWith("test ")).Select(s => s[5..]));
        return (locked, tested);
    }

    [Theory]
    [MemberData(nameof(Rows))]
    public void FileNodeLockBytes_MatchQemu(string row, string format, string opener, string locked, string tested)
    {
        var (flags, request) = Opener(opener);
        var graph = FakeGraphs.Build(format, flags);
        FakeGraphs.AttachUser(graph.Top, request);
        var actual = LocksFor(graph.File.CumulativePermissions);
        Assert.True(locked == actual.Locked, $"{row}: locked {actual.Locked}, QEMU locks {locked}");
        Assert.True(tested == actual.Tested, $"{row}: tested {actual.Tested}, QEMU tests {tested}");
    }

    [Theory]
    [InlineData("rw", "100,201,203", "200,101,103")]
    [InlineData("ro", "100,201,203", "200,101,103")]
    [InlineData("ro-U", "100", "200")]
    public void BackingFileOfOverlay_IsReadableButNotWritableByOthers(string opener, string locked, string tested)
    {
        var (flags, request) = Opener(opener);
        var graph = FakeGraphs.Build("overlay", flags);
        FakeGraphs.AttachUser(graph.Top, request);
        var actual = LocksFor(graph.BackingFile!.CumulativePermissions);
        Assert.Equal(locked, actual.Locked);
        Assert.Equal(tested, actual.Tested);
    }

    [Fact]
    public void OverlayWriter_TopFileLocksLikeQcow2Writer()
    {
        var graph = FakeGraphs.Build("overlay", OpenFlags.ReadWrite);
        FakeGraphs.AttachUser(graph.Top, BackendPermissions.FromOpenFlags(OpenFlags.ReadWrite));
        Assert.Equal("100,101,103,201,203", LocksFor(graph.File.CumulativePermissions).Locked);
    }
}
