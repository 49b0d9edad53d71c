using Vdisk.Interop.Support;
using Xunit;

namespace Vdisk.Interop;

/// <summary>
/// Locks on vpc, vdi, vhdx and luks images, one file each (a luks image is opened with a secret): vdisk's holders take QEMU's bytes on the
/// file, against QEMU's and vdisk's holders (and qemu-nbd) every opener gets QEMU's outcome and
/// words, and one-shot commands make QEMU's lock calls in QEMU's order.
/// </summary>
public class FormatLockConformanceTests
{
    private static readonly string[] Formats = ["vpc", "vdi", "vhdx", "luks"];

    /// <summary>
    /// How the tools name the image: <c>-f FMT IMG</c>, or, for luks or with file options,
    /// <c>--image-opts</c> (luks with its secret, <c>--object</c> before it).
    /// </summary>
    private static string[] ImageArgs(string f, string img, string fileOptions = "") => f == "luks"
        ? ["--object", Luks.LuksInteropTests.Secret, "--image-opts", $"driver=luks,key-secret=s0,file.driver=file,file.filename={img}{fileOptions}"]
        : fileOptions.Length > 0 ? ["--image-opts", $"driver={f},file.driver=file,file.filename={img}{fileOptions}"] : ["-f", f, img];

    /// <summary>An image made by qemu-img with a little data.</summary>
    private sealed class Image : IDisposable
    {
        private readonly TempDir _dir = new();
        public string Path { get; }
        public string Dir => _dir.Path;

        public Image(string format)
        {
            Path = _dir.File("disk." + format);
            if (format == "luks")
                Path = Luks.LuksInteropTests.MakeWithQemu(_dir, "disk.luks", "", "16M", "write -P 0x11 1M 64k");
            else
            {
                Check(Programs.Run("qemu-img", "create", "-q", "-f", format, Path, "16M"));
                Check(Programs.Run("qemu-io", "-f", format, Path, "-c", "write -P 0x11 1M 64k"));
            }
        }

        private static void Check(RunResult r)
        {
            if (r.ExitCode != 0) throw new InvalidOperationException(r.ToString());
        }

        public void Dispose() => _dir.Dispose();
    }

    private static Mode[] Holders(string f) =>
    [
        new("io rw", img => ("qemu-io", [.. ImageArgs(f, img), "-c", "sleep 60000"]), img => (Programs.Vdisk, ["io", .. ImageArgs(f, img), "-c", "sleep 60000"])),
        new("io -r", img => ("qemu-io", ["-r", .. ImageArgs(f, img), "-c", "sleep 60000"]), img => (Programs.Vdisk, ["io", "-r", .. ImageArgs(f, img), "-c", "sleep 60000"])),
        new("io -r -U", img => ("qemu-io", ["-r", "-U", .. ImageArgs(f, img), "-c", "sleep 60000"]), img => (Programs.Vdisk, ["io", "-r", "-U", .. ImageArgs(f, img), "-c", "sleep 60000"])),
        new("io locking=off", img => ("qemu-io", [.. ImageArgs(f, img, ",file.locking=off"), "-c", "sleep 60000"]),
            img => (Programs.Vdisk, ["io", .. ImageArgs(f, img, ",file.locking=off"), "-c", "sleep 60000"])),
        new("qemu-nbd", img => ("qemu-nbd", ["--socket", img + ".sock", .. ImageArgs(f, img)]), null),
        new("qemu-nbd -r", img => ("qemu-nbd", ["-r", "--socket", img + ".sock", .. ImageArgs(f, img)]), null),
    ];

    private static Mode[] Openers(string f, string dir) =>
    [
        new("io rw read", img => ("qemu-io", [.. ImageArgs(f, img), "-c", "read 0 4k"]), img => (Programs.Vdisk, ["io", .. ImageArgs(f, img), "-c", "read 0 4k"])),
        new("io -r read", img => ("qemu-io", ["-r", .. ImageArgs(f, img), "-c", "read 0 4k"]), img => (Programs.Vdisk, ["io", "-r", .. ImageArgs(f, img), "-c", "read 0 4k"])),
        new("io -r -U read", img => ("qemu-io", ["-r", "-U", .. ImageArgs(f, img), "-c", "read 0 4k"]), img => (Programs.Vdisk, ["io", "-r", "-U", .. ImageArgs(f, img), "-c", "read 0 4k"])),
        new("io write", img => ("qemu-io", [.. ImageArgs(f, img), "-c", "write 2M 4k"]), img => (Programs.Vdisk, ["io", .. ImageArgs(f, img), "-c", "write 2M 4k"])),
        new("info", img => ("qemu-img", ["info", .. ImageArgs(f, img)]), img => (Programs.Vdisk, ["info", .. ImageArgs(f, img)])),
        new("info -U", img => ("qemu-img", ["info", "-U", .. ImageArgs(f, img)]), img => (Programs.Vdisk, ["info", "-U", .. ImageArgs(f, img)])),
        new("check", img => ("qemu-img", ["check", .. ImageArgs(f, img)]), img => (Programs.Vdisk, ["check", .. ImageArgs(f, img)])),
        new("map", img => ("qemu-img", ["map", "--output=json", .. ImageArgs(f, img)]), img => (Programs.Vdisk, ["map", "--output=json", .. ImageArgs(f, img)])),
        new("convert", img => ("qemu-img", ["convert", .. ImageArgs(f, img), "-O", "raw", System.IO.Path.Combine(dir, "q.raw")]),
            img => (Programs.Vdisk, ["convert", .. ImageArgs(f, img), "-O", "raw", System.IO.Path.Combine(dir, "v.raw")])),
        new("convert -U", img => ("qemu-img", ["convert", "-U", .. ImageArgs(f, img), "-O", "raw", System.IO.Path.Combine(dir, "q.raw")]),
            img => (Programs.Vdisk, ["convert", "-U", .. ImageArgs(f, img), "-O", "raw", System.IO.Path.Combine(dir, "v.raw")])),
    ];

    public static TheoryData<string, string> TwinHolderCases()
    {
        var data = new TheoryData<string, string>();
        foreach (var f in Formats)
            foreach (var h in Holders(f).Where(h => h.Vdisk is not null))
                data.Add(f, h.Name);
        return data;
    }

    public static TheoryData<string, string> HolderCases()
    {
        var data = new TheoryData<string, string>();
        foreach (var f in Formats)
            foreach (var h in Holders(f))
                data.Add(f, h.Name);
        return data;
    }

    [Theory]
    [MemberData(nameof(TwinHolderCases))]
    public void Holder_TakesQemusBytes(string format, string holderName)
    {
        using var image = new Image(format);
        var mode = Holders(format).Single(h => h.Name == holderName);
        string qemu, vdisk;
        var (qp, qa) = mode.Qemu(image.Path);
        using (var q = Holder.Start(image.Path, qp, qa)) qemu = LockBytesHeld.Describe(LockBytesHeld.Read(q.Pid, image.Path));
        var (vp, va) = mode.Vdisk!(image.Path);
        using (var v = Holder.Start(image.Path, vp, va)) vdisk = LockBytesHeld.Describe(LockBytesHeld.Read(v.Pid, image.Path));
        Assert.Equal(qemu, vdisk);
    }

    private static string Outcome(RunResult r) => $"exit {r.ExitCode}: {Vmdk.VmdkSideBySide.Normalized(r.Stderr).Trim()}";

    [Theory]
    [MemberData(nameof(HolderCases))]
    public void Openers_GetQemusOutcomeAgainstEveryHolder(string format, string holderName)
    {
        var holder = Holders(format).Single(h => h.Name == holderName);
        OpenerConformance.AssertNone(OpenerConformance.Mismatches(holder, () => new Image(format), i => i.Path, i => i.Path,
            i => Openers(format, i.Dir), Outcome, format));
    }

    public static TheoryData<string, string> OneShotCases()
    {
        var data = new TheoryData<string, string>();
        foreach (var f in Formats)
            foreach (var o in new[] { "io rw read", "io write", "info", "check", "map", "convert" })
                data.Add(f, o);
        return data;
    }

    [Theory]
    [MemberData(nameof(OneShotCases))]
    public void OneShot_MakesQemusLockCalls(string format, string openerName)
    {
        using var image = new Image(format);
        var opener = Openers(format, image.Dir).Single(o => o.Name == openerName);
        var (qp, qa) = opener.Qemu(image.Path);
        var (vp, va) = opener.Vdisk!(image.Path);
        var (qr, qemuCalls) = LockTrace.Capture(qp, qa);
        var (vr, vdiskCalls) = LockTrace.Capture(vp, va);
        Assert.Equal(qr.ExitCode, vr.ExitCode);
        Assert.Equal(qemuCalls, vdiskCalls);
    }

    [Theory]
    [InlineData("vpc", "")]
    [InlineData("vpc", "subformat=fixed")]
    [InlineData("vdi", "")]
    [InlineData("vdi", "static=on")]
    [InlineData("vhdx", "")]
    [InlineData("vhdx", "subformat=fixed,block_size=1M,log_size=2M")]
    public void Create_MakesQemusLockCalls(string format, string options)
    {
        using var dir = new TempDir();
        string[] Args(string p) => options.Length == 0 ? ["create", "-q", "-f", format, p, "16M"] : ["create", "-q", "-f", format, "-o", options, p, "16M"];
        var (qr, qemuCalls) = LockTrace.Capture("qemu-img", Args(dir.File("q." + format)));
        var (vr, vdiskCalls) = LockTrace.Capture(Programs.Vdisk, Args(dir.File("v." + format)));
        Assert.Equal(0, qr.ExitCode);
        Assert.Equal(0, vr.ExitCode);
        Assert.Equal(qemuCalls, vdiskCalls);
    }
}
