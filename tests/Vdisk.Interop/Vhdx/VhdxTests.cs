using Vdisk.Interop.Support;
using Xunit;
using static Vdisk.Interop.Support.FormatCompat;
using static Vdisk.Interop.Support.Qemu;

namespace Vdisk.Interop.Vhdx;

/// <summary>
/// VHDX images both ways: images qemu-img makes (both subformats, non-default block and log
/// sizes, block_state_zero off) and qemu-io fills read back through vdisk as through QEMU;
/// images vdisk makes, converts into and writes pass qemu-img check and compare as equal to
/// what qemu-img makes of the same input, down to the file size.
/// </summary>
public class VhdxTests
{
    private static readonly string[] Writes =
        ["write -P 0x11 0 1k", "write -P 0x22 3M 5M", "write -P 0x33 1000 3000", "write -z 9M 100k", "write -P 0x44 12M 64k", "write -P 0x55 63M 1M"];

    public static TheoryData<string> Options => new()
    {
        "",
        "subformat=fixed",
        "block_size=1M,log_size=4M",
        "subformat=fixed,block_size=32M,log_size=2M",
        "block_state_zero=off",
        "subformat=fixed,block_state_zero=off",
        "subformat=dynamic,block_size=2M,log_size=1.5M",
    };

    [Theory]
    [MemberData(nameof(Options))]
    public void Images_made_by_qemu_img_read_back_the_same(string options)
    {
        using var dir = new TempDir();
        string img = Make(dir, "disk.vhdx", "vhdx", options, "64M", Writes);
        SameInfoAndMap(img);
        SameContent(dir, img);
        foreach (var w in Writes.Where(w => w.Contains("-P")))
            Same(true, ["-f", "vhdx", "-r", "-c", w.Replace("write", "read -q"), img]);
        Same(true, ["-f", "vhdx", "-r", "-c", "read -q -P 0 20M 1M", img]);
    }

    [Theory]
    [MemberData(nameof(Options))]
    public void Writes_through_vdisk_leave_what_qemu_io_leaves(string options)
    {
        using var dir = new TempDir();
        string q = Make(dir, "q.vhdx", "vhdx", options, "64M");
        string v = Make(dir, "v.vhdx", "vhdx", options, "64M");
        Ok(Io(["-f", "vhdx", .. Commands(Writes), q]));
        Ok(Qemu.Vdisk(["io", "-f", "vhdx", .. Commands(Writes), v]));
        Ok(Img("check", "-f", "vhdx", v));
        AssertIdentical(q, v, "vhdx", "vhdx");
        // Each new block lands where QEMU puts it: the files grow alike.
        Assert.Equal(new FileInfo(q).Length, new FileInfo(v).Length);
    }

    [Theory]
    [MemberData(nameof(Options))]
    public void Convert_into_vhdx_makes_what_qemu_img_makes(string options)
    {
        using var dir = new TempDir();
        string source = Make(dir, "src.qcow2", "qcow2", "", "50M",
            "write -P 7 0 3M", "write -P 9 20M 1k", "write -z 30M 2M", "write -P 3 49M 1M");
        string q = dir.File("q.vhdx"), v = dir.File("v.vhdx");
        string[] Args(string target) => options.Length == 0
            ? ["convert", "-O", "vhdx", source, target]
            : ["convert", "-O", "vhdx", "-o", options, source, target];
        Ok(Img(Args(q)));
        Ok(Qemu.Vdisk(Args(v)));
        Ok(Img("check", "-f", "vhdx", v));
        AssertIdentical(source, v, "qcow2", "vhdx");
        Assert.Equal(new FileInfo(q).Length, new FileInfo(v).Length);
        string Info(string path) => Ok(Img("info", "--output=json", path)).Stdout.Replace(path, "IMG");
        Assert.Equal(Info(q), Info(v));
    }
}
