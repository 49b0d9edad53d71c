using Vdisk.Interop.Support;
using Xunit;

namespace Vdisk.Interop.Qcow2;

/// <summary>
/// qcow2 images with an external data file (data_file, data_file_raw): made and written by
/// vdisk and by QEMU side by side, read back by the other, refused where QEMU refuses, and
/// locked as QEMU locks the image file and the data file (the data file is a child with role
/// DATA, the image file keeps only METADATA).
/// </summary>
public class Qcow2DataFileTests
{
    private static readonly string[] Writes =
    [
        "write -P 0x11 1M 64k", "write -P 0x22 0 4k", "write -z 2M 64k", "discard 1M 64k",
        "write -P 0x33 3M 8k", "write -z -u 3M 64k", "write -P 0x44 200k 1k",
    ];

    private static string CreateOptions(bool raw) => raw ? "data_file=d.raw,data_file_raw=on" : "data_file=d.raw";

    private static string ReadIn(string dir, params string[] args) => Qemu.Ok(SideBySide.RunIn(dir, "qemu-img", args)).Stdout;

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void CreateAndWrites_LeaveQemusFiles_ThatQemuReadsTheSame(bool raw)
    {
        using var s = new SideBySide();
        s.Same("create", "-f", "qcow2", "-o", CreateOptions(raw), "a.qcow2", "4M");
        Qemu.Ok(SideBySide.RunIn(s.TheirDir, "qemu-io", [.. Qemu.Commands(Writes), "a.qcow2"]));
        Qemu.Ok(SideBySide.RunIn(s.MyDir, Programs.Vdisk, ["io", .. Qemu.Commands(Writes), "a.qcow2"]));
        foreach (var f in new[] { "a.qcow2", "d.raw" })
            Assert.True(File.ReadAllBytes(Path.Combine(s.TheirDir, f)).AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(s.MyDir, f))), $"{f} differs");
        foreach (var args in new[] { new[] { "check", "a.qcow2" }, ["map", "--output=json", "a.qcow2"], ["info", "--output=json", "a.qcow2"] })
            Assert.Equal(ReadIn(s.TheirDir, args).Replace("\"actual-size\"", ""), ReadIn(s.MyDir, args).Replace("\"actual-size\"", ""));
        s.AssertSameInfo("a.qcow2");
        Qemu.Ok(SideBySide.RunIn(s.TheirDir, "qemu-img", ["convert", "-O", "raw", "a.qcow2", "out.raw"]));
        Qemu.Ok(SideBySide.RunIn(s.MyDir, "qemu-img", ["convert", "-O", "raw", "a.qcow2", "out.raw"]));
        Assert.Equal(File.ReadAllBytes(Path.Combine(s.TheirDir, "out.raw")), File.ReadAllBytes(Path.Combine(s.MyDir, "out.raw")));
        if (raw) Assert.Equal(File.ReadAllBytes(Path.Combine(s.MyDir, "out.raw")), File.ReadAllBytes(Path.Combine(s.MyDir, "d.raw")));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void QemuMadeImage_ReadsAndReportsTheSameThroughVdisk(bool raw)
    {
        using var dir = new TempDir();
        Qemu.Ok(SideBySide.RunIn(dir.Path, "qemu-img", ["create", "-q", "-f", "qcow2", "-o", CreateOptions(raw), "a.qcow2", "4M"]));
        Qemu.Ok(SideBySide.RunIn(dir.Path, "qemu-io", [.. Qemu.Commands(Writes), "a.qcow2"]));
        foreach (var args in new[]
                 {
                     new[] { "info", "a.qcow2" }, ["info", "--output=json", "a.qcow2"], ["map", "--output=json", "a.qcow2"],
                     ["map", "a.qcow2"], ["check", "a.qcow2"], ["check", "--output=json", "a.qcow2"],
                 })
        {
            var theirs = SideBySide.RunIn(dir.Path, "qemu-img", args);
            var mine = SideBySide.RunIn(dir.Path, Programs.Vdisk, args);
            SideBySide.AssertSameOutput(theirs, mine);
        }
        Qemu.Ok(SideBySide.RunIn(dir.Path, "qemu-img", ["convert", "-O", "raw", "a.qcow2", "q.raw"]));
        Qemu.Ok(SideBySide.RunIn(dir.Path, Programs.Vdisk, ["convert", "-O", "raw", "a.qcow2", "v.raw"]));
        Assert.Equal(File.ReadAllBytes(Path.Combine(dir.Path, "q.raw")), File.ReadAllBytes(Path.Combine(dir.Path, "v.raw")));
        Assert.Contains("Images are identical.", Qemu.Ok(SideBySide.RunIn(dir.Path, Programs.Vdisk, ["compare", "a.qcow2", "q.raw"])).Stdout);
    }

    [Fact]
    public void ExplicitDataFileOption_ReadsTheImageLikeQemu()
    {
        using var dir = new TempDir();
        Qemu.Ok(SideBySide.RunIn(dir.Path, "qemu-img", ["create", "-q", "-f", "qcow2", "-o", "data_file=d.raw", "a.qcow2", "1M"]));
        Qemu.Ok(SideBySide.RunIn(dir.Path, "qemu-io", ["-c", "write -P 0x5a 0 64k", "a.qcow2"]));
        Qemu.Ok(SideBySide.RunIn(dir.Path, "qemu-img", ["amend", "-o", "data_file=", "a.qcow2"]));
        foreach (var opts in new[]
                 {
                     "driver=qcow2,file.filename=a.qcow2,data-file.filename=d.raw",
                     "driver=qcow2,file.filename=a.qcow2",
                     "driver=qcow2,file.filename=a.qcow2,data-file.filename=missing.raw",
                 })
        {
            string[] args = ["-c", "read -P 0x5a 0 64k", "--image-opts", opts];
            var theirs = SideBySide.RunIn(dir.Path, "qemu-io", args);
            var mine = SideBySide.RunIn(dir.Path, Programs.Vdisk, ["io", .. args]);
            Assert.Equal(theirs.ExitCode, mine.ExitCode);
            Assert.Equal(theirs.Stderr.Replace("qemu-io: ", ""), mine.Stderr.Replace("vdisk: ", "").Replace("qemu-io: ", ""));
        }
    }

    public static TheoryData<string, string[]> Refusals() => new()
    {
        { "compat=0.10", ["create", "-f", "qcow2", "-o", "data_file=d.raw,compat=0.10", "n.qcow2", "1M"] },
        { "raw without data file", ["create", "-f", "qcow2", "-o", "data_file_raw=on", "n.qcow2", "1M"] },
        { "raw with backing file", ["create", "-f", "qcow2", "-o", "data_file=d2.raw,data_file_raw=on", "-b", "base.raw", "-F", "raw", "n.qcow2", "1M"] },
        { "snapshot", ["snapshot", "-c", "s1", "a.qcow2"] },
        { "amend name without data file", ["amend", "-o", "data_file=x.raw", "plain.qcow2"] },
        { "amend raw on", ["amend", "-o", "data_file_raw=on", "a.qcow2"] },
        { "downgrade", ["amend", "-o", "compat=0.10", "a.qcow2"] },
        { "data-file option without data file", ["info", "--image-opts", "driver=qcow2,file.filename=plain.qcow2,data-file.filename=d.raw"] },
        { "measure", ["measure", "-O", "qcow2", "-o", "data_file=x.raw", "--size", "4M"] },
    };

    [Theory]
    [MemberData(nameof(Refusals))]
    public void Refusals_AndTheirWords_AreQemus(string what, string[] args)
    {
        _ = what;
        using var s = new SideBySide(dir =>
        {
            Qemu.Ok(SideBySide.RunIn(dir, "qemu-img", ["create", "-q", "-f", "qcow2", "-o", "data_file=d.raw", "a.qcow2", "1M"]));
            Qemu.Ok(SideBySide.RunIn(dir, "qemu-img", ["create", "-q", "-f", "qcow2", "plain.qcow2", "1M"]));
            Qemu.Ok(SideBySide.RunIn(dir, "qemu-img", ["create", "-q", "-f", "raw", "base.raw", "1M"]));
        });
        s.Same(args);
        foreach (var f in new[] { "n.qcow2", "d2.raw", "a.qcow2", "plain.qcow2", "x.raw" }) s.AssertSameFile(f);
    }

    [Fact]
    public void CompressedWrite_IsRefusedLikeQemu()
    {
        using var dir = new TempDir();
        Qemu.Ok(SideBySide.RunIn(dir.Path, "qemu-img", ["create", "-q", "-f", "qcow2", "-o", "data_file=d.raw", "a.qcow2", "1M"]));
        string[] args = ["-c", "write -c 0 64k", "a.qcow2"];
        var theirs = SideBySide.RunIn(dir.Path, "qemu-io", args);
        var mine = SideBySide.RunIn(dir.Path, Programs.Vdisk, ["io", .. args]);
        Assert.Equal((theirs.ExitCode, theirs.Stdout, theirs.Stderr), (mine.ExitCode, mine.Stdout, mine.Stderr));
    }

    [Theory]
    [InlineData("data_file=e.raw", false)]
    [InlineData("data_file_raw=off", true)]
    [InlineData("data_file=e.raw,data_file_raw=on", true)]
    [InlineData("data_file=", false)]
    public void Amend_RewritesTheHeaderLikeQemu(string options, bool raw)
    {
        using var s = new SideBySide(dir =>
        {
            Qemu.Ok(SideBySide.RunIn(dir, "qemu-img", ["create", "-q", "-f", "qcow2", "-o", CreateOptions(raw), "a.qcow2", "1M"]));
            File.Copy(Path.Combine(dir, "d.raw"), Path.Combine(dir, "e.raw"));
        });
        s.Same("amend", "-o", options, "a.qcow2");
        Assert.Equal(File.ReadAllBytes(Path.Combine(s.TheirDir, "a.qcow2")), File.ReadAllBytes(Path.Combine(s.MyDir, "a.qcow2")));
        s.AssertSameInfo("a.qcow2");
    }

    [Theory]
    [InlineData("metadata", false)]
    [InlineData("falloc", false)]
    [InlineData("full", false)]
    [InlineData("full", true)]
    public void CreateWithPreallocation_PreparesBothFilesLikeQemu(string preallocation, bool raw)
    {
        using var s = new SideBySide();
        s.Same("create", "-f", "qcow2", "-o", $"{CreateOptions(raw)},preallocation={preallocation}", "a.qcow2", "2M");
        Assert.Equal(File.ReadAllBytes(Path.Combine(s.TheirDir, "a.qcow2")), File.ReadAllBytes(Path.Combine(s.MyDir, "a.qcow2")));
        s.AssertSameFile("d.raw");
        Assert.Equal(ReadIn(s.TheirDir, "map", "--output=json", "a.qcow2"), ReadIn(s.MyDir, "map", "--output=json", "a.qcow2"));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Resize_ShrinksAndGrowsTheDataFileWithTheDisk(bool raw)
    {
        using var s = new SideBySide(dir =>
        {
            Qemu.Ok(SideBySide.RunIn(dir, "qemu-img", ["create", "-q", "-f", "qcow2", "-o", CreateOptions(raw), "a.qcow2", "4M"]));
            Qemu.Ok(SideBySide.RunIn(dir, "qemu-io", ["-c", "write -P 0x66 0 2M", "a.qcow2"]));
        });
        s.Same("resize", "--shrink", "a.qcow2", "1M");
        s.AssertSameFile("d.raw");
        s.Same("resize", "a.qcow2", "3M");
        s.AssertSameFile("d.raw");
        foreach (var args in new[] { new[] { "check", "a.qcow2" }, ["map", "--output=json", "a.qcow2"] })
            Assert.Equal(ReadIn(s.TheirDir, args), ReadIn(s.MyDir, args));
    }

    [Fact]
    public void ConvertIntoADataFile_LeavesQemusFiles()
    {
        using var s = new SideBySide(dir =>
        {
            Qemu.Ok(SideBySide.RunIn(dir, "qemu-img", ["create", "-q", "-f", "raw", "src.raw", "2M"]));
            Qemu.Ok(SideBySide.RunIn(dir, "qemu-io", ["-f", "raw", "-c", "write -P 0x7e 64k 128k", "-c", "write -P 1 1M 4k", "src.raw"]));
        });
        s.Same("convert", "-O", "qcow2", "-o", "data_file=c.raw", "src.raw", "c.qcow2");
        foreach (var f in new[] { "c.qcow2", "c.raw" })
            Assert.True(File.ReadAllBytes(Path.Combine(s.TheirDir, f)).AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(s.MyDir, f))), $"{f} differs");
        Assert.Equal(ReadIn(s.TheirDir, "check", "c.qcow2"), ReadIn(s.MyDir, "check", "c.qcow2"));
    }

    /// <summary>img_compare: -f names the first image's format only; without -F the second is probed (244 compares a raw data file with its image so).</summary>
    [Fact]
    public void Compare_WithoutSecondFormat_ProbesTheSecondImage()
    {
        using var s = new SideBySide(dir =>
        {
            Qemu.Ok(SideBySide.RunIn(dir, "qemu-img", ["create", "-q", "-f", "qcow2", "-o", "data_file=d.raw,data_file_raw=on", "a.qcow2", "1M"]));
            Qemu.Ok(SideBySide.RunIn(dir, "qemu-io", ["-f", "raw", "-c", "write -P 42 0 1M", "d.raw"]));
        });
        s.Same("compare", "-f", "raw", "d.raw", "a.qcow2");
        s.Same("compare", "-f", "raw", "a.qcow2", "a.qcow2");
    }

    // --- locking: QEMU's bytes on both files ----------------------------------------------------

    /// <summary>An image with an external data file (absolute name), made by qemu-img, with data in it.</summary>
    private sealed class Image : IDisposable
    {
        private readonly TempDir _dir = new();
        public string Qcow2 { get; }
        public string Data { get; }
        public string Dir => _dir.Path;

        public Image()
        {
            Qcow2 = _dir.File("img.qcow2");
            Data = _dir.File("img.data");
            Qemu.Ok(Qemu.Img("create", "-q", "-f", "qcow2", "-o", $"data_file={Data}", Qcow2, "4M"));
            Qemu.Ok(Qemu.Io("-f", "qcow2", Qcow2, "-c", "write -P 0x11 0 64k"));
        }

        public void Dispose() => _dir.Dispose();
    }

    private static (string, string[]) QemuIo(params string[] a) => ("qemu-io", a);
    private static (string, string[]) VdiskIo(params string[] a) => (Programs.Vdisk, ["io", .. a]);

    private static readonly Mode[] Holders =
    [
        new("io rw", img => QemuIo("-f", "qcow2", img, "-c", "sleep 60000"), img => VdiskIo("-f", "qcow2", img, "-c", "sleep 60000")),
        new("io -r", img => QemuIo("-r", "-f", "qcow2", img, "-c", "sleep 60000"), img => VdiskIo("-r", "-f", "qcow2", img, "-c", "sleep 60000")),
        new("io -r -U", img => QemuIo("-r", "-U", "-f", "qcow2", img, "-c", "sleep 60000"), img => VdiskIo("-r", "-U", "-f", "qcow2", img, "-c", "sleep 60000")),
        new("io data-file option", img => QemuIo("--image-opts", $"driver=qcow2,file.filename={img},data-file.filename={img[..^".qcow2".Length]}.data", "-c", "sleep 60000"),
            img => VdiskIo("--image-opts", $"driver=qcow2,file.filename={img},data-file.filename={img[..^".qcow2".Length]}.data", "-c", "sleep 60000")),
    ];

    public static TheoryData<string> HolderNames() => new(Holders.Select(h => h.Name));

    [Theory]
    [MemberData(nameof(HolderNames))]
    public void Holder_TakesQemusBytesOnImageAndDataFile(string holderName)
    {
        using var image = new Image();
        var mode = Holders.Single(h => h.Name == holderName);
        string Bytes(Holder h) =>
            $"image {LockBytesHeld.Describe(LockBytesHeld.Read(h.Pid, image.Qcow2))}; data {LockBytesHeld.Describe(LockBytesHeld.Read(h.Pid, image.Data))}";
        string qemu, vdisk;
        using (var q = Holder.Start(image.Data, mode.Qemu(image.Qcow2).Program, mode.Qemu(image.Qcow2).Args)) qemu = Bytes(q);
        using (var v = Holder.Start(image.Data, mode.Vdisk!(image.Qcow2).Program, mode.Vdisk!(image.Qcow2).Args)) vdisk = Bytes(v);
        Assert.Equal(qemu, vdisk);
    }

    /// <summary>
    /// A daemon with the data file as its own node, named by the qcow2 node's <c>data-file</c>
    /// (a node reference): it serves the image's data over NBD and holds QEMU's bytes on both files.
    /// </summary>
    [Fact]
    public void DaemonWithDataFileNodeReference_ServesTheImageAndHoldsQemusBytes()
    {
        string Run(Func<IEnumerable<string>, string[], Daemon> start, Image image)
        {
            string sock = Path.Combine(image.Dir, "s.sock");
            string[] args =
            [
                "--blockdev", $"driver=file,node-name=data,filename={image.Data}",
                "--blockdev", $"driver=file,node-name=meta,filename={image.Qcow2}",
                "--blockdev", "driver=qcow2,node-name=q,file=meta,data-file=data",
                "--nbd-server", $"addr.type=unix,addr.path={sock}",
                "--export", "type=nbd,id=e,node-name=q,writable=on",
            ];
            using var daemon = start(args, [sock]);
            var io = Qemu.Ok(Qemu.Io("-f", "raw", "-c", "read -P 0x11 0 64k", "-c", "write -P 0x4d 64k 64k", $"nbd+unix:///q?socket={sock}"));
            return $"image {LockBytesHeld.Describe(LockBytesHeld.Read(daemon.Pid, image.Qcow2))}; data {LockBytesHeld.Describe(LockBytesHeld.Read(daemon.Pid, image.Data))}";
        }
        using var theirs = new Image();
        using var mine = new Image();
        Assert.Equal(Run(Daemon.Qsd, theirs), Run(Daemon.Vdisk, mine));
        foreach (var image in new[] { theirs, mine })
        {
            Qemu.Ok(Qemu.Io("-c", "read -P 0x4d 64k 64k", image.Qcow2));
            Qemu.AssertClean(image.Qcow2);
        }
    }

    private static Mode[] Openers(Image image) =>
    [
        new("io rw read", _ => QemuIo("-f", "qcow2", image.Qcow2, "-c", "read 0 4k"), _ => VdiskIo("-f", "qcow2", image.Qcow2, "-c", "read 0 4k")),
        new("io -r read", _ => QemuIo("-r", "-f", "qcow2", image.Qcow2, "-c", "read 0 4k"), _ => VdiskIo("-r", "-f", "qcow2", image.Qcow2, "-c", "read 0 4k")),
        new("io -r -U read", _ => QemuIo("-r", "-U", "-f", "qcow2", image.Qcow2, "-c", "read 0 4k"), _ => VdiskIo("-r", "-U", "-f", "qcow2", image.Qcow2, "-c", "read 0 4k")),
        new("info", _ => ("qemu-img", ["info", image.Qcow2]), _ => (Programs.Vdisk, ["info", image.Qcow2])),
        new("check", _ => ("qemu-img", ["check", image.Qcow2]), _ => (Programs.Vdisk, ["check", image.Qcow2])),
        new("map", _ => ("qemu-img", ["map", "--output=json", image.Qcow2]), _ => (Programs.Vdisk, ["map", "--output=json", image.Qcow2])),
        new("io write", _ => QemuIo("-f", "qcow2", image.Qcow2, "-c", "write 1M 4k"), _ => VdiskIo("-f", "qcow2", image.Qcow2, "-c", "write 1M 4k")),
    ];

    private static readonly Mode[] DataFileHolders =
    [
        new("raw rw", data => QemuIo("-f", "raw", data, "-c", "sleep 60000"), data => VdiskIo("-f", "raw", data, "-c", "sleep 60000")),
        new("raw -r", data => QemuIo("-r", "-f", "raw", data, "-c", "sleep 60000"), data => VdiskIo("-r", "-f", "raw", data, "-c", "sleep 60000")),
    ];

    public static TheoryData<string> DataFileHolderNames() => new(DataFileHolders.Select(h => h.Name));

    [Theory]
    [MemberData(nameof(DataFileHolderNames))]
    public void Openers_GetQemusOutcome_WhileTheDataFileIsHeld(string holderName)
    {
        var holder = DataFileHolders.Single(h => h.Name == holderName);
        OpenerConformance.AssertNone(OpenerConformance.Mismatches(holder, () => new Image(), i => i.Data, i => i.Data,
            Openers, r => Outcome.Of(r).Replace("qemu-img: ", "").Replace("qemu-io: ", "").Replace("vdisk: ", ""), "data file"));
    }

    [Theory]
    [InlineData("io rw read")]
    [InlineData("io -r read")]
    [InlineData("info")]
    [InlineData("check")]
    [InlineData("map")]
    [InlineData("io write")]
    public void OneShot_MakesQemusLockCallsOnBothFiles(string openerName)
    {
        using var image = new Image();
        var opener = Openers(image).Single(o => o.Name == openerName);
        var (qp, qa) = opener.Qemu(image.Qcow2);
        var (vp, va) = opener.Vdisk!(image.Qcow2);
        var (qr, qemuCalls) = LockTrace.Capture(qp, qa);
        var (vr, vdiskCalls) = LockTrace.Capture(vp, va);
        Assert.Equal(0, qr.ExitCode);
        Assert.Equal(0, vr.ExitCode);
        Assert.Equal(qemuCalls, vdiskCalls);
    }
}
