using Vdisk.Interop.Support;
using Xunit;

namespace Vdisk.Interop;

/// <summary><c>--object secret,...</c>: vdisk's tools take it where QEMU's do and word its errors alike.</summary>
public class ObjectOptionTests
{
    public static TheoryData<string> BadObjects() =>
    [
        "secret", "id=s0", "secret,id=s0", "foo,id=a", "secret,id=s0,data=abc,bogus=1", "secret,id=s0,data=abc,format=hex",
        "secret,id=s0,file=/nonexist", "secret,id=0s,data=a", "secret,id=s0,data=a%%,format=base64", "secret,id=s0,data=a,loaded=on",
    ];

    [Theory]
    [MemberData(nameof(BadObjects))]
    public void BadObject_SameErrorAsQemuImgAndQemuIo(string text)
    {
        using var dir = new TempDir();
        string img = dir.File("none.raw");
        FormatCompat.Same(false, "info", "--object", text, img);
        FormatCompat.Same(false, "convert", "--object", text, img, dir.File("out.raw"));
        FormatCompat.Same(true, "--object", text, "-c", "read 0 1", img);
    }

    [Fact]
    public void DuplicateId_SameErrorAsQemuImg()
    {
        using var dir = new TempDir();
        FormatCompat.Same(false, "info", "--object", "secret,id=s0,data=a", "--object", "secret,id=s0,data=b", dir.File("none.raw"));
    }

    [Fact]
    public void StorageDaemonAndQemuNbd_TakeSecrets()
    {
        using var dir = new TempDir();
        var qsd = Programs.Run(Programs.VdiskAs("qemu-storage-daemon"), "--object", "secret,id=s0");
        Assert.Equal(1, qsd.ExitCode);
        Assert.Equal("qemu-storage-daemon: --object secret,id=s0: Either 'file' or 'data' must be provided\n", qsd.Stderr);
        var nbd = Programs.Run(Programs.VdiskAs("qemu-nbd"), "--object", "secret,id=s0", dir.File("x"));
        Assert.Equal(1, nbd.ExitCode);
        Assert.Equal("qemu-nbd: Either 'file' or 'data' must be provided\n", nbd.Stderr);
    }
}
