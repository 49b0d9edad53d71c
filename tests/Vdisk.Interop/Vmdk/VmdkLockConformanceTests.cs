using Vdisk.Interop.Support;
using Xunit;
using static Vdisk.Interop.Vmdk.VmdkSideBySide;

namespace Vdisk.Interop.Vmdk;

/// <summary>
/// Locks on vmdk images, where every extent is a file node with its own lock bytes: a
/// descriptor file (METADATA), flat extents (DATA: others may write, nobody may resize) and
/// sparse extents (DATA and METADATA). vdisk's holders take QEMU's bytes on every file, and
/// against QEMU's and vdisk's holders every opener gets QEMU's outcome and words, naming the
/// same file; one-shot commands make QEMU's lock calls in QEMU's order.
/// </summary>
public class VmdkLockConformanceTests
{
    /// <summary>A vmdk image made by qemu-img with a little data, and the files it consists of.</summary>
    private sealed class Image : IDisposable
    {
        private readonly TempDir _dir = new();
        public string Path { get; }
        public string Dir => _dir.Path;
        public string[] Files { get; }

        public Image(string subformat)
        {
            Path = _dir.File("disk.vmdk");
            Check(Programs.Run("qemu-img", "create", "-q", "-f", "vmdk", "-o", $"subformat={subformat}", Path, "3G"));
            Check(Programs.Run("qemu-io", "-f", "vmdk", Path, "-c", "write -P 0x11 2047M 2M"));
            Files = Directory.GetFiles(_dir.Path, "disk*.vmdk").Order(StringComparer.Ordinal).ToArray();
        }

        private static void Check(RunResult r)
        {
            if (r.ExitCode != 0) throw new InvalidOperationException(r.ToString());
        }

        public void Dispose() => _dir.Dispose();
    }

    private static string Opts(string img, string extra) => $"driver=vmdk,file.driver=file,file.filename={img}{extra}";

    private static readonly Mode[] Holders =
    [
        new("io rw", img => ("qemu-io", ["-f", "vmdk", img, "-c", "sleep 60000"]), img => (Programs.Vdisk, ["io", "-f", "vmdk", img, "-c", "sleep 60000"])),
        new("io -r", img => ("qemu-io", ["-r", "-f", "vmdk", img, "-c", "sleep 60000"]), img => (Programs.Vdisk, ["io", "-r", "-f", "vmdk", img, "-c", "sleep 60000"])),
        new("io -r -U", img => ("qemu-io", ["-r", "-U", "-f", "vmdk", img, "-c", "sleep 60000"]), img => (Programs.Vdisk, ["io", "-r", "-U", "-f", "vmdk", img, "-c", "sleep 60000"])),
        // locking=off is an option of the descriptor's file node only: the extent files still lock.
        new("io locking=off", img => ("qemu-io", ["--image-opts", Opts(img, ",file.locking=off"), "-c", "sleep 60000"]),
            img => (Programs.Vdisk, ["io", "--image-opts", Opts(img, ",file.locking=off"), "-c", "sleep 60000"])),
        new("io extent locking=off", img => ("qemu-io", ["--image-opts", Opts(img, ",extents.1.locking=off"), "-c", "sleep 60000"]),
            img => (Programs.Vdisk, ["io", "--image-opts", Opts(img, ",extents.1.locking=off"), "-c", "sleep 60000"])),
        new("qemu-nbd", img => ("qemu-nbd", ["-f", "vmdk", "--socket", img + ".sock", img]), null),
        new("qemu-nbd -r", img => ("qemu-nbd", ["-r", "-f", "vmdk", "--socket", img + ".sock", img]), null),
        new("virtio-blk", img => ("qemu-system-x86_64", ["-S", "-nodefaults", "-display", "none", "-machine", "pc",
            "-drive", $"if=none,id=d0,file={img},format=vmdk", "-device", "virtio-blk-pci,drive=d0"]), null),
    ];

    private static Mode[] Openers(string dir) =>
    [
        new("io rw read", img => ("qemu-io", ["-f", "vmdk", img, "-c", "read 0 4k"]), img => (Programs.Vdisk, ["io", "-f", "vmdk", img, "-c", "read 0 4k"])),
        new("io -r read", img => ("qemu-io", ["-r", "-f", "vmdk", img, "-c", "read 0 4k"]), img => (Programs.Vdisk, ["io", "-r", "-f", "vmdk", img, "-c", "read 0 4k"])),
        new("io -r -U read", img => ("qemu-io", ["-r", "-U", "-f", "vmdk", img, "-c", "read 0 4k"]), img => (Programs.Vdisk, ["io", "-r", "-U", "-f", "vmdk", img, "-c", "read 0 4k"])),
        new("info", img => ("qemu-img", ["info", img]), img => (Programs.Vdisk, ["info", img])),
        new("info -U", img => ("qemu-img", ["info", "-U", img]), img => (Programs.Vdisk, ["info", "-U", img])),
        new("check", img => ("qemu-img", ["check", img]), img => (Programs.Vdisk, ["check", img])),
        new("map", img => ("qemu-img", ["map", "--output=json", img]), img => (Programs.Vdisk, ["map", "--output=json", img])),
        new("compare", img => ("qemu-img", ["compare", img, img]), img => (Programs.Vdisk, ["compare", img, img])),
        new("convert", img => ("qemu-img", ["convert", "-O", "raw", img, System.IO.Path.Combine(dir, "q.raw")]),
            img => (Programs.Vdisk, ["convert", "-O", "raw", img, System.IO.Path.Combine(dir, "v.raw")])),
        new("convert -U", img => ("qemu-img", ["convert", "-U", "-O", "raw", img, System.IO.Path.Combine(dir, "q.raw")]),
            img => (Programs.Vdisk, ["convert", "-U", "-O", "raw", img, System.IO.Path.Combine(dir, "v.raw")])),
        new("create -b", img => ("qemu-img", ["create", "-q", "-f", "vmdk", "-b", img, "-F", "vmdk", System.IO.Path.Combine(dir, "q-top.vmdk")]),
            img => (Programs.Vdisk, ["create", "-q", "-f", "vmdk", "-b", img, "-F", "vmdk", System.IO.Path.Combine(dir, "v-top.vmdk")])),
        new("io write", img => ("qemu-io", ["-f", "vmdk", img, "-c", "write 1M 4k"]), img => (Programs.Vdisk, ["io", "-f", "vmdk", img, "-c", "write 1M 4k"])),
    ];

    private static readonly string[] Subformats = ["twoGbMaxExtentFlat", "twoGbMaxExtentSparse", "monolithicSparse"];

    public static TheoryData<string, string> TwinHolderCases()
    {
        var data = new TheoryData<string, string>();
        foreach (var h in Holders.Where(h => h.Vdisk is not null))
            foreach (var s in Subformats)
            {
                // A monolithic image has no extents.1: qemu-io refuses the option itself.
                if (h.Name == "io extent locking=off" && s == "monolithicSparse") continue;
                data.Add(h.Name, s);
            }
        return data;
    }

    public static TheoryData<string, string> HolderCases()
    {
        var data = new TheoryData<string, string>();
        foreach (var h in Holders)
            foreach (var s in Subformats)
            {
                // A monolithic image has no extents.1: qemu-io refuses the option itself, so there is no holder.
                if (h.Name == "io extent locking=off" && s == "monolithicSparse") continue;
                data.Add(h.Name, s);
            }
        return data;
    }

    [Theory]
    [MemberData(nameof(TwinHolderCases))]
    public void Holder_TakesQemusBytesOnEveryFile(string holderName, string subformat)
    {
        using var image = new Image(subformat);
        var mode = Holders.Single(h => h.Name == holderName);
        string Bytes(Holder h) => string.Join("; ", image.Files.Select(f =>
            $"{System.IO.Path.GetFileName(f)} {LockBytesHeld.Describe(LockBytesHeld.Read(h.Pid, f))}"));
        string qemu, vdisk;
        var (qp, qa) = mode.Qemu(image.Path);
        using (var q = Holder.Start(LastLocked(image), qp, qa)) qemu = Bytes(q);
        var (vp, va) = mode.Vdisk!(image.Path);
        using (var v = Holder.Start(LastLocked(image), vp, va)) vdisk = Bytes(v);
        Assert.Equal(qemu, vdisk);
    }

    /// <summary>The file whose locks settle last (the last extent; a holder has opened everything once it is locked).</summary>
    private static string LastLocked(Image image) => image.Files[^1];

    /// <summary>What an opener's user sees apart from timings: exit code and error text (program names normalized).</summary>
    private static string Outcome(RunResult r) => $"exit {r.ExitCode}: {Normalized(r.Stderr).Trim()}";

    [Theory]
    [MemberData(nameof(HolderCases))]
    public void Openers_GetQemusOutcomeAgainstEveryHolder(string holderName, string subformat)
    {
        var holder = Holders.Single(h => h.Name == holderName);
        OpenerConformance.AssertNone(OpenerConformance.Mismatches(holder, () => new Image(subformat), i => i.Path, LastLocked,
            i => Openers(i.Dir), Outcome, subformat));
    }

    [Theory]
    [InlineData("io rw read", "twoGbMaxExtentFlat")]
    [InlineData("io -r read", "twoGbMaxExtentSparse")]
    [InlineData("io write", "twoGbMaxExtentFlat")]
    [InlineData("io write", "monolithicSparse")]
    [InlineData("info", "twoGbMaxExtentFlat")]
    [InlineData("check", "twoGbMaxExtentSparse")]
    [InlineData("map", "twoGbMaxExtentFlat")]
    [InlineData("convert", "twoGbMaxExtentSparse")]
    [InlineData("create -b", "monolithicSparse")]
    public void OneShot_MakesQemusLockCalls(string openerName, string subformat)
    {
        using var image = new Image(subformat);
        var opener = Openers(image.Dir).Single(o => o.Name == openerName);
        var (qp, qa) = opener.Qemu(image.Path);
        var (vp, va) = opener.Vdisk!(image.Path);
        var (qr, qemuCalls) = LockTrace.Capture(qp, qa);
        var (vr, vdiskCalls) = LockTrace.Capture(vp, va);
        Assert.Equal(0, qr.ExitCode);
        Assert.Equal(0, vr.ExitCode);
        Assert.Equal(qemuCalls, vdiskCalls);
    }

    [Theory]
    [InlineData("monolithicSparse")]
    [InlineData("monolithicFlat")]
    [InlineData("twoGbMaxExtentSparse")]
    [InlineData("streamOptimized")]
    public void Create_MakesQemusLockCalls(string subformat)
    {
        using var dir = new TempDir();
        var (qr, qemuCalls) = LockTrace.Capture("qemu-img", "create", "-q", "-f", "vmdk", "-o", $"subformat={subformat}", dir.File("q.vmdk"), "3G");
        var (vr, vdiskCalls) = LockTrace.Capture(Programs.Vdisk, "create", "-q", "-f", "vmdk", "-o", $"subformat={subformat}", dir.File("v.vmdk"), "3G");
        Assert.Equal(0, qr.ExitCode);
        Assert.Equal(0, vr.ExitCode);
        Assert.Equal(qemuCalls, vdiskCalls);
    }
}
