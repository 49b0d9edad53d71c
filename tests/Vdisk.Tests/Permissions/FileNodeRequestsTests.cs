using Vdisk.Inspection;
using Vdisk.Locking;
using Vdisk.Permissions;
using Xunit;

namespace Vdisk.Tests.Permissions;

public class FileNodeRequestsTests
{
    /// <summary>qemu-locking-spec §4.5: the bytes each tool locks on the image file (holds / unshared).</summary>
    [Theory]
    [InlineData(AccessMode.Write, "qcow2", "100,101,103", "201,203")]
    [InlineData(AccessMode.Read, "qcow2", "100", "201,203")]
    [InlineData(AccessMode.ForceShare, "qcow2", "100", "")]
    [InlineData(AccessMode.Info, "qcow2", "", "201,203")]
    [InlineData(AccessMode.Resize, "qcow2", "100,101,103", "201,203")]
    [InlineData(AccessMode.Write, "raw", "100,101", "")]
    [InlineData(AccessMode.Read, "raw", "100", "")]
    [InlineData(AccessMode.ForceShare, "raw", "100", "")]
    [InlineData(AccessMode.Info, "raw", "", "")]
    [InlineData(AccessMode.Resize, "raw", "100,101,103", "")]
    public void Mode_requests_lock_the_bytes_qemu_locks(AccessMode mode, string format, string holds, string unshared)
    {
        var request = AccessModes.FileRequest(mode, format);
        Assert.Equal(holds, string.Join(",", BlockPermissions.Bits(request.Perm).Select(LockBytes.HoldByte)));
        Assert.Equal(unshared, string.Join(",", BlockPermissions.Bits(request.Unshared).Select(LockBytes.UnsharedByte)));
    }

    [Fact]
    public void Unknown_format_is_rejected()
    {
        Assert.Throws<ArgumentException>(() => FileNodeRequests.For(OpenFlags.None, "vmdk"));
    }

    [Fact]
    public void Mode_names_round_trip()
    {
        foreach (var mode in AccessModes.All) Assert.Equal(mode, AccessModes.Parse(AccessModes.Name(mode)));
        Assert.Null(AccessModes.Parse("exclusive"));
    }
}
