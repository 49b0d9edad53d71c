using Xunit;

using Vdisk.Interop.Support;

namespace Vdisk.Interop.Qcow2;

/// <summary>
/// qemu-img dd side by side with qemu-img 7.2: operands, their refusals, the size of the output
/// it creates (7.2's count-less-skip quirk included) and what lands in it.
/// </summary>
public class DdCompatTests
{
    private static void Prepare(string dir)
    {
        Qemu.Ok(SideBySide.RunIn(dir, "qemu-img", ["create", "-q", "-f", "qcow2", "s.qcow2", "1M"]));
        Qemu.Ok(SideBySide.RunIn(dir, "qemu-io", ["-c", "write -P 1 0 64k", "-c", "write -P 2 512k 4k", "-c", "write -P 3 1020k 4k", "s.qcow2"]));
    }

    [Theory]
    [InlineData("if=s.qcow2 of=o bs=512 count=1")]
    [InlineData("if=s.qcow2 of=o count=2")]
    [InlineData("if=s.qcow2 of=o bs=4k count=4 skip=2")]
    [InlineData("if=s.qcow2 of=o bs=64k skip=8")]
    [InlineData("if=s.qcow2 of=o bs=1000")]
    [InlineData("if=s.qcow2 of=o bs=1k count=1 bs=2k")]
    [InlineData("if=s.qcow2 of=o count=0")]
    [InlineData("if=s.qcow2 of=o count=99999999999")]
    [InlineData("if=s.qcow2 of=o skip=5000")]
    [InlineData("if=s.qcow2 of=o bs=1M skip=9E")]
    [InlineData("-O qcow2 if=s.qcow2 of=o bs=64k")]
    [InlineData("if=s.qcow2 -f raw of=o count=3")]
    [InlineData("-U if=s.qcow2 of=o count=3")]
    [InlineData("if=s.qcow2")]
    [InlineData("of=o")]
    [InlineData("")]
    [InlineData("if=s.qcow2 of=o bs=0")]
    [InlineData("if=s.qcow2 of=o bs=3G")]
    [InlineData("if=s.qcow2 of=o bs=abc")]
    [InlineData("if=s.qcow2 of=o count=-1")]
    [InlineData("if=s.qcow2 of=o skip=x")]
    [InlineData("if=s.qcow2 of=o foo=1")]
    [InlineData("if=s.qcow2 of=o foo")]
    [InlineData("if=s.qcow2 of=o conv=notrunc")]
    [InlineData("if=nonexist of=o")]
    [InlineData("if=s.qcow2 of=o -O bogus")]
    [InlineData("if=s.qcow2 of=o -O dmg")]
    [InlineData("if=s.qcow2 of=nodir/o")]
    [InlineData("-Z if=s.qcow2 of=o")]
    public void Dd_copies_as_qemu_img_dd(string args)
    {
        using var sides = new SideBySide(Prepare);
        sides.Same(["dd", .. args.Split(' ', StringSplitOptions.RemoveEmptyEntries)]);
        sides.AssertSameFile("o");
        if (File.Exists(Path.Combine(sides.TheirDir, "o"))) sides.AssertSameImage("o");
    }
}
