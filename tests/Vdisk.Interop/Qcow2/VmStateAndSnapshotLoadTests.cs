using Vdisk.Interop.Support;
using Xunit;

namespace Vdisk.Interop.Qcow2;

/// <summary>
/// The two ways tools reach a qcow2 image past its active disk, side by side with QEMU 7.2:
/// qemu-io's <c>read -b</c>/<c>write -b</c> (the VM state area savevm uses, kept by internal
/// snapshots) and qemu-img convert's <c>-l</c> (convert an internal snapshot instead of the
/// active state).
/// </summary>
public class VmStateAndSnapshotLoadTests
{
    private static string[] Script(string script) => [.. script.Split(" | ").SelectMany(c => new[] { "-c", c })];

    [Theory]
    [InlineData("raw", "write -b 0 512 | read -b 0 512")]
    [InlineData("qcow2", "write -b -P 0x11 1T 4k | read -b -P 0x11 1T 4k | read -b -P 0 0 4k | write -b -P 5 512 1536 | read -b -P 5 512 1536 | write -b 1 512 | read -b 0 511")]
    [InlineData("qcow2", "write -b -P 3 0 4M | read -b -P 3 0 4M | read -P 0 0 4M | map")]
    public void VmState_IsWrittenAndReadAsQemuIoDoes(string format, string script)
    {
        using var dir = new TempDir();
        string q = dir.File("q." + format), v = dir.File("v." + format);
        foreach (var image in new[] { q, v }) Qemu.Ok(Programs.Run("qemu-img", "create", "-q", "-f", format, image, "64M"));
        var qr = Programs.Run("qemu-io", ["-f", format, q, .. Script(script)]);
        var vr = Programs.Run(Programs.Vdisk, ["io", "-f", format, v, .. Script(script)]);
        Assert.Equal((qr.ExitCode, ToolOutputTests.Normalize(qr.Stdout), qr.Stderr), (vr.ExitCode, ToolOutputTests.Normalize(vr.Stdout), vr.Stderr));
        if (format == "qcow2")
        {
            // The same clusters allocated (the check's counts and end offset), and QEMU reads the
            // same VM state from both images.
            Assert.Equal(Qemu.Ok(Programs.Run("qemu-img", "check", q)).Stdout.Replace(q, "IMG"), Qemu.Ok(Programs.Run("qemu-img", "check", v)).Stdout.Replace(v, "IMG"));
            string[] dump = ["-c", "read -b -v 0 4k", "-c", "read -b -v 1T 4k", "-c", "read -b -v 4193792 512"];
            Assert.Equal(ToolOutputTests.Normalize(Qemu.Ok(Programs.Run("qemu-io", ["-f", format, q, .. dump])).Stdout),
                ToolOutputTests.Normalize(Qemu.Ok(Programs.Run("qemu-io", ["-f", format, v, .. dump])).Stdout));
        }
    }

    [Fact]
    public void VmState_SurvivesASnapshotAndItsApplication()
    {
        using var dir = new TempDir();
        string image = dir.File("s.qcow2");
        Qemu.Ok(Programs.Run("qemu-img", "create", "-q", "-f", "qcow2", image, "64M"));
        Qemu.Ok(Programs.Run(Programs.Vdisk, "io", "-f", "qcow2", image, "-c", "write -b -P 0x11 1T 4k"));
        Qemu.Ok(Programs.Run("qemu-img", "snapshot", "-c", "foo", image));
        Qemu.Ok(Programs.Run(Programs.Vdisk, "io", "-f", "qcow2", image, "-c", "write -b -P 0x22 1T 4k"));
        Qemu.Ok(Programs.Run("qemu-img", "snapshot", "-a", "foo", image));
        var read = Programs.Run(Programs.Vdisk, "io", "-f", "qcow2", image, "-c", "read -b -P 0x11 1T 4k");
        Assert.Equal("read 4096/4096 bytes at offset 1099511627776\n4 KiB, 1 ops; TIME", ToolOutputTests.Normalize(read.Stdout).TrimEnd('\n'));
        Assert.Equal("No errors were found on the image.", Qemu.Ok(Programs.Run("qemu-img", "check", image)).Stdout.Split('\n')[0]);
    }

    private static void TwoSnapshots(string dir)
    {
        Qemu.Ok(SideBySide.RunIn(dir, "qemu-img", ["create", "-q", "-f", "qcow2", "s.qcow2", "1M"]));
        Qemu.Ok(SideBySide.RunIn(dir, "qemu-io", ["-f", "qcow2", "-c", "write -P 1 0 64k", "s.qcow2"]));
        Qemu.Ok(SideBySide.RunIn(dir, "qemu-img", ["snapshot", "-c", "one", "s.qcow2"]));
        Qemu.Ok(SideBySide.RunIn(dir, "qemu-io", ["-f", "qcow2", "-c", "write -P 2 64k 64k", "s.qcow2"]));
        // A snapshot whose name is the other one's id: a plain -l tries ids first.
        Qemu.Ok(SideBySide.RunIn(dir, "qemu-img", ["snapshot", "-c", "1", "s.qcow2"]));
        Qemu.Ok(SideBySide.RunIn(dir, "qemu-io", ["-f", "qcow2", "-c", "write -P 3 0 1M", "s.qcow2"]));
        Qemu.Ok(SideBySide.RunIn(dir, "qemu-img", ["create", "-q", "-f", "raw", "other.raw", "1M"]));
    }

    [Theory]
    [InlineData("convert -l one -O raw s.qcow2 out.raw")]
    [InlineData("convert -l 1 -O qcow2 s.qcow2 out.qcow2")]
    [InlineData("convert -l 2 -O raw s.qcow2 out.raw")]
    [InlineData("convert -l snapshot.name=1 -O raw s.qcow2 out.raw")]
    [InlineData("convert -l snapshot.id=2,snapshot.name=1 -O raw s.qcow2 out.raw")]
    [InlineData("convert -l snapshot.id=1,snapshot.name=1 -O raw s.qcow2 out.raw")]
    [InlineData("convert -l nope -O raw s.qcow2 out.raw")]
    [InlineData("convert -l snapshot.bogus=1 -O raw s.qcow2 out.raw")]
    [InlineData("convert -l snapshot.x -O raw s.qcow2 out.raw")]
    [InlineData("convert -l one -O raw s.qcow2 other.raw out.raw")]
    [InlineData("convert -l one -f raw -O raw other.raw out.raw")]
    [InlineData("convert -s one -O raw s.qcow2 out.raw")]
    public void ConvertOfASnapshot_AsQemuImgConvertsIt(string commandLine)
    {
        using var sides = new SideBySide(TwoSnapshots);
        sides.Same(commandLine.Split(' '));
        foreach (var name in new[] { "out.raw", "out.qcow2" }) sides.AssertSameFile(name);
        if (File.Exists(Path.Combine(sides.MyDir, "out.raw"))) sides.AssertSameImage("out.raw");
        if (File.Exists(Path.Combine(sides.MyDir, "out.qcow2"))) sides.AssertSameImage("out.qcow2");
        // The source's active state is untouched.
        Qemu.Ok(SideBySide.RunIn(sides.MyDir, "qemu-io", ["-r", "-f", "qcow2", "-c", "read -P 3 0 1M", "s.qcow2"]));
    }
}
