using Vdisk.Interop.Support;
using Vdisk.Locking;
using Vdisk.Permissions;
using Xunit;

namespace Vdisk.Interop;

/// <summary>
/// Two nodes on one file inside one process conflict like two QEMU drives in one VM (OFD
/// locks belong to the open file description, not the process).
/// </summary>
public class InProcessTests
{
    /// <summary>A paused VM with two drives on the image: "ok" once its monitor answers (start-up done), else its error.</summary>
    private static string QemuTwoDrives(string img, string d0, string d1)
    {
        string qmp = Path.Combine(Path.GetDirectoryName(img)!, "qmp.sock");
        var (outcome, running) = Launch.Start("qemu-system-x86_64",
        [
            "-S", "-nodefaults", "-display", "none", "-machine", "pc",
            "-drive", $"if=none,id=d0,file={img},format=raw{d0}", "-device", "virtio-blk-pci,drive=d0",
            "-drive", $"if=none,id=d1,file={img},format=raw{d1}", "-device", "virtio-blk-pci,drive=d1",
            "-qmp", $"unix:{qmp},server=on,wait=off",
        ], qmp, qmp: true);
        running?.Dispose();
        return outcome;
    }

    private static string VdiskTwoNodes(string img, bool firstReadOnly, bool secondReadOnly)
    {
        var source = ImageSource.FromFile(img, "raw");
        var first = BackendPermissions.GuestDevice(firstReadOnly, resizable: true, shareRw: false);
        var second = BackendPermissions.GuestDevice(secondReadOnly, resizable: true, shareRw: false);
        using var a = DiskImage.Open(source, firstReadOnly ? OpenFlags.None : OpenFlags.ReadWrite, first);
        try
        {
            using var b = DiskImage.Open(source, secondReadOnly ? OpenFlags.None : OpenFlags.ReadWrite, second);
            return "ok";
        }
        catch (LockConflictException e)
        {
            return e.Message + " +hint";
        }
    }

    [Theory]
    [InlineData(false, false)]
    [InlineData(false, true)]
    [InlineData(true, false)]
    [InlineData(true, true)]
    public void TwoDevicesOnOneImage_ConflictAsInOneQemu(bool firstReadOnly, bool secondReadOnly)
    {
        using var dir = new TempDir();
        var img = dir.RawImage();
        string qemu = QemuTwoDrives(img, firstReadOnly ? ",readonly=on" : "", secondReadOnly ? ",readonly=on" : "");
        string vdisk = VdiskTwoNodes(img, firstReadOnly, secondReadOnly);
        Assert.Equal(qemu, vdisk);
    }

    [Fact]
    public void SymlinkAndTarget_AreTheSameImage()
    {
        using var dir = new TempDir();
        var img = dir.RawImage();
        var link = dir.File("link.raw");
        System.IO.File.CreateSymbolicLink(link, img);
        var device = BackendPermissions.GuestDevice(false, true, false);
        using var a = DiskImage.Open(ImageSource.FromFile(link, "raw"), OpenFlags.ReadWrite, device);
        var e = Assert.Throws<LockConflictException>(() => DiskImage.Open(ImageSource.FromFile(img, "raw"), OpenFlags.ReadWrite));
        Assert.Equal("Failed to get \"write\" lock", e.Message);
    }

    [Fact]
    public void ClosingTheOnlyUser_ReleasesEveryByte()
    {
        using var dir = new TempDir();
        var img = dir.RawImage();
        var image = DiskImage.Open(ImageSource.FromFile(img, "raw"), OpenFlags.ReadWrite, BackendPermissions.GuestDevice(false, true, false));
        Assert.NotEmpty(LockBytesHeld.Read(Environment.ProcessId, img));
        image.Dispose();
        Assert.Empty(LockBytesHeld.Read(Environment.ProcessId, img));
        Assert.Empty(Support.Holder.ImageDescriptors(Environment.ProcessId, img));
    }
}
