using Vdisk.Interop.Support;
using Xunit;
using static Vdisk.Interop.Support.Qemu;
using static Vdisk.Interop.Vmdk.VmdkSideBySide;

namespace Vdisk.Interop.Vmdk;

/// <summary>
/// vmdk images made by real qemu-img and written by real qemu-io read back through vdisk as
/// QEMU reads them (guest bytes, qemu-io pattern reads), and vdisk's info, map and check print
/// what qemu-img prints for them; images vdisk makes and writes pass qemu-img check and compare
/// and have QEMU's layout.
/// </summary>
public class VmdkInteropTests
{
    /// <summary>Writes in both extents of a 3 GiB image (across the 2 GiB split), zero writes, a partial grain.</summary>
    private static readonly string[] Workload =
    [
        "write -P 0x11 70k 4k", "write -P 0x22 2047M 2M", "write -z 1M 64k", "write -P 0x33 100k 300k",
        "write -P 0x44 3071M 1M", "write -z 3M 256k", "write -P 0x55 5000000 1000",
    ];

    private static readonly string[] Reads =
    [
        "read -P 0x11 70k 4k", "read -P 0x22 2047M 2M", "read -P 0 1M 64k", "read -P 0x33 100k 300k",
        "read -P 0x44 3071M 1M", "read -P 0 3M 256k", "read -P 0x55 5000000 1000", "read -P 0 2050M 1M",
    ];

    public static TheoryData<string> CreateOptions() =>
    [
        "subformat=monolithicSparse",
        "subformat=monolithicFlat",
        "subformat=twoGbMaxExtentSparse",
        "subformat=twoGbMaxExtentFlat",
        "subformat=monolithicSparse,zeroed_grain=on",
        "subformat=twoGbMaxExtentSparse,zeroed_grain=on,adapter_type=lsilogic,hwversion=7",
        "compat6=on,adapter_type=buslogic,toolsversion=10240",
    ];

    [Theory]
    [MemberData(nameof(CreateOptions))]
    public void QemuMadeImage_ReadsInfoMapAndCheckAsQemu(string options)
    {
        using var dir = new TempDir();
        string img = dir.File("disk.vmdk");
        Ok(Img("create", "-q", "-f", "vmdk", "-o", options, img, "3G"));
        Ok(Io([.. Commands(Workload), "-f", "vmdk", img]));

        AssertSameGuestBytes(dir.Path, img);
        Ok(VdiskRun(["io", "-f", "vmdk", "-r", .. Commands(Reads), img]));
        AssertSame("info", img);
        AssertSame("info", "--output=json", img);
        AssertSame("map", "--output=json", img);
        AssertSame("map", img);
        AssertSame("check", img);
        AssertSame("check", "--output=json", img);
    }

    /// <summary>
    /// A descriptor file longer than QEMU's 10 KiB descriptor area (a 700G twoGbMaxExtentFlat has
    /// 350 extent lines): the first write renews the CID in the whole file, as qemu-io does,
    /// instead of cutting it at 10 KiB (iotest 059 read EIO past the broken extent line).
    /// </summary>
    [Fact]
    public void FirstWrite_RenewsTheCidOfALongDescriptorFileAsQemu()
    {
        using var dir = new TempDir();
        string theirs = dir.File("q.vmdk"), mine = dir.File("v.vmdk");
        Ok(Img("create", "-q", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentFlat", theirs, "700G"));
        Ok(Img("create", "-q", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentFlat", mine, "700G"));
        Assert.True(new FileInfo(mine).Length > 10240);
        Ok(Io("-f", "vmdk", "-c", "write -P 0x59 690G 512", theirs));
        Ok(Qemu.Vdisk("io", "-f", "vmdk", "-c", "write -P 0x59 690G 512", mine));
        Ok(Io("-f", "vmdk", "-c", "read -P 0x59 690G 512", mine));
        // Without the CID line and the NUL padding after the text: both CIDs are random and printed
        // without leading zeros ("%x"), so a shorter one moves the padding by a character.
        static string WithoutCid(string path) => string.Join('\n', File.ReadAllText(path).TrimEnd('\0').Split('\n').Where(l => !l.StartsWith("CID=", StringComparison.Ordinal)));
        Assert.Equal(new FileInfo(theirs).Length, new FileInfo(mine).Length);
        Assert.Equal(WithoutCid(theirs).Replace("q-f", "v-f", StringComparison.Ordinal), WithoutCid(mine));
    }

    [Fact]
    public void QemuMadeStreamOptimizedImage_ReadsInfoMapAndCheckAsQemu()
    {
        using var dir = new TempDir();
        string raw = dir.File("src.raw"), img = dir.File("stream.vmdk");
        Ok(Img("create", "-q", "-f", "raw", raw, "3G"));
        Ok(Io([.. Commands(Workload), "-f", "raw", raw]));
        // Incompressible data too: its grains are longer than a grain once compressed.
        File.WriteAllBytes(dir.File("random"), RandomBytes(300_000));
        Ok(Io("-f", "raw", "-c", $"write -s {dir.File("random")} 10M 300000", raw));
        Ok(Img("convert", "-O", "vmdk", "-o", "subformat=streamOptimized", raw, img));

        AssertSameGuestBytes(dir.Path, img);
        Ok(VdiskRun(["io", "-f", "vmdk", "-r", .. Commands(Reads), img]));
        AssertSame("info", img);
        AssertSame("info", "--output=json", img);
        AssertSame("map", "--output=json", img);
        AssertSame("map", img);
        AssertSame("check", img);
        AssertSame("compare", raw, img);
    }

    private static byte[] RandomBytes(int n)
    {
        var b = new byte[n];
        new Random(12).NextBytes(b);
        return b;
    }

    [Theory]
    [MemberData(nameof(CreateOptions))]
    public void VdiskMadeAndWrittenImage_HasQemusLayoutAndPassesCheck(string options)
    {
        using var dir = new TempDir();
        string mine = dir.File("mine.vmdk"), theirs = dir.File("theirs.vmdk");
        Ok(VdiskRun("create", "-q", "-f", "vmdk", "-o", options, mine, "3G"));
        Ok(Img("create", "-q", "-f", "vmdk", "-o", options, theirs, "3G"));
        Ok(VdiskRun(["io", .. Commands(Workload), "-f", "vmdk", mine]));
        Ok(Io([.. Commands(Workload), "-f", "vmdk", theirs]));

        AssertClean(mine);
        AssertIdentical(mine, theirs);
        Ok(Io([.. Commands(Reads), "-r", "-f", "vmdk", mine]));
        // The same grains at the same host offsets, in files of the same names and sizes.
        Assert.Equal(Img("map", "--output=json", theirs).Stdout.Replace("theirs", "X"), Img("map", "--output=json", mine).Stdout.Replace("mine", "X"));
        Assert.Equal(Img("info", theirs).Stdout.Replace("theirs", "X").Split("cid:")[0], Img("info", mine).Stdout.Replace("mine", "X").Split("cid:")[0]);
        foreach (var file in Directory.GetFiles(dir.Path, "theirs*"))
            Assert.Equal(new FileInfo(file).Length, new FileInfo(file.Replace("theirs", "mine")).Length);
    }

    [Theory]
    [MemberData(nameof(CreateOptions))]
    [InlineData("subformat=streamOptimized")]
    public void Create_WritesQemusFilesAndFormattingLine(string options)
    {
        using var dir = new TempDir();
        // Names of the same length, so that masking them keeps every offset.
        var q = Img("create", "-f", "vmdk", "-o", options, dir.File("qemu.vmdk"), "3G");
        var v = VdiskRun("create", "-f", "vmdk", "-o", options, dir.File("mine.vmdk"), "3G");
        Assert.Equal(Seen(q).Replace("qemu", "X"), Seen(v).Replace("mine", "X"));
        foreach (var file in Directory.GetFiles(dir.Path, "qemu*"))
        {
            var mine = Path.Combine(dir.Path, Path.GetFileName(file).Replace("qemu", "mine"));
            // Flat extents are all zeroes of the extent's size (2 GiB and more: too large to load).
            if (new FileInfo(file).Length > 64 << 20)
            {
                Assert.Equal(new FileInfo(file).Length, new FileInfo(mine).Length);
                continue;
            }
            // Everything but the random CID and the names in the descriptor is the same.
            Assert.Equal(Masked(File.ReadAllBytes(file), "qemu"), Masked(File.ReadAllBytes(mine), "mine"));
        }
    }

    /// <summary>
    /// The file with its CID value and the image's name masked out. QEMU prints the random CID
    /// with %x (no leading zeroes), so the descriptor's length varies from image to image: the
    /// descriptor text is compared on its own (masked), and the file with the descriptor blanked
    /// to NULs in place, so every other byte keeps its offset.
    /// </summary>
    private static string Masked(byte[] file, string name)
    {
        string text = System.Text.Encoding.Latin1.GetString(file);
        int start = text.IndexOf("# Disk DescriptorFile", StringComparison.Ordinal);
        if (start < 0) return text.Replace(name, "X");
        int end = text.IndexOf('\0', start);
        // A descriptor file of its own (flat and split subformats) is all text: nothing to keep in place.
        bool embedded = end >= 0;
        if (!embedded) end = text.Length;
        string descriptor = System.Text.RegularExpressions.Regex.Replace(text[start..end].Replace(name, "X"), "\nCID=[0-9a-f]+\n", "\nCID=?\n");
        return embedded ? descriptor + "\n--\n" + text[..start] + new string('\0', end - start) + text[end..] : text[..start] + descriptor;
    }

    [Theory]
    [InlineData("-o", "adapter_type=foo")]
    [InlineData("-o", "subformat=monolithicflat")]
    [InlineData("-o", "compat6=on,hwversion=7")]
    [InlineData("-o", "subformat=monolithicFlat,zeroed_grain=on")]
    [InlineData("-o", "zeroed_grain=maybe")]
    [InlineData("-o", "cluster_size=64k")]
    [InlineData("-o", "hwversion=undefined,subformat=twoGbMaxExtentFlat")]
    [InlineData("-o", "help")]
    public void Create_RefusesAndHelpsAsQemuImg(string flag, string value)
    {
        using var dir = new TempDir();
        var q = Img("create", "-f", "vmdk", flag, value, dir.File("theirs.vmdk"), "1M");
        var v = VdiskRun("create", "-f", "vmdk", flag, value, dir.File("mine.vmdk"), "1M");
        Assert.Equal(Seen(q).Replace("theirs", "X"), Seen(v).Replace("mine", "X"));
        Assert.Equal(Directory.GetFiles(dir.Path, "theirs*").Length, Directory.GetFiles(dir.Path, "mine*").Length);
    }

    [Fact]
    public void Create_WithABackingFile_ReadsAndWritesThroughItAsQemu()
    {
        using var dir = new TempDir();
        string baseImg = dir.File("base.vmdk");
        Ok(Img("create", "-q", "-f", "vmdk", baseImg, "4M"));
        Ok(Io("-f", "vmdk", "-c", "write -P 0x5b 0 3M", baseImg));
        foreach (var (who, name) in new[] { ("qemu", "theirs.vmdk"), ("vdisk", "mine.vmdk") })
        {
            var args = new[] { "create", "-q", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk", dir.File(name) };
            Ok(who == "qemu" ? Img(args) : VdiskRun(args));
        }
        string mine = dir.File("mine.vmdk"), theirs = dir.File("theirs.vmdk");
        var ops = Commands(["write -P 0x11 100k 8k", "write -P 0x22 1M 64k", "write -z 2M 4k"]);
        Ok(Io([.. ops, "-f", "vmdk", theirs]));
        Ok(VdiskRun(["io", .. ops, "-f", "vmdk", mine]));
        AssertIdentical(mine, theirs);
        AssertClean(mine);
        AssertSameGuestBytes(dir.Path, theirs);
        AssertSame("info", theirs);
        AssertSame("info", "--output=json", theirs);
        AssertSame("map", "--output=json", theirs);
        AssertSame("info", "--backing-chain", mine);
        // A parent whose CID changed (it was written after the child was made) is refused on read.
        Ok(Io("-f", "vmdk", "-c", "write -P 0x66 3M 4k", baseImg));
        AssertSame("io", "-f", "vmdk", "-c", "read -P 0x5b 0 4k", theirs);
        AssertSame("io", "-f", "vmdk", "-c", "read -P 0x11 100k 8k", theirs);
    }

    [Fact]
    public void Create_RefusesBackingFilesQemuRefuses()
    {
        using var dir = new TempDir();
        Ok(Img("create", "-q", "-f", "qcow2", dir.File("base.qcow2"), "1M"));
        Ok(Img("create", "-q", "-f", "vmdk", dir.File("base.vmdk"), "1M"));
        foreach (var args in new[]
        {
            new[] { "-b", "base.qcow2", "-F", "qcow2" },
            ["-b", "base.qcow2", "-F", "vmdk"],
            ["-b", "base.vmdk", "-F", "vmdk", "-o", "subformat=monolithicFlat"],
            ["-b", "base.vmdk"],
            ["-b", "missing.vmdk", "-F", "vmdk"],
        })
        {
            var q = Img(["create", "-f", "vmdk", .. args, dir.File("theirs.vmdk")]);
            var v = VdiskRun(["create", "-f", "vmdk", .. args, dir.File("mine.vmdk")]);
            Assert.Equal(Seen(q).Replace("theirs", "X"), Seen(v).Replace("mine", "X"));
        }
    }

    [Theory]
    [InlineData("monolithicSparse")]
    [InlineData("monolithicFlat")]
    [InlineData("twoGbMaxExtentSparse")]
    [InlineData("twoGbMaxExtentFlat")]
    [InlineData("streamOptimized")]
    public void ConvertToVmdk_MatchesQemuImg(string subformat)
    {
        using var dir = new TempDir();
        string raw = dir.File("src.raw");
        Ok(Img("create", "-q", "-f", "raw", raw, "3G"));
        Ok(Io([.. Commands(Workload), "-f", "raw", raw]));
        File.WriteAllBytes(dir.File("random"), RandomBytes(300_000));
        Ok(Io("-f", "raw", "-c", $"write -s {dir.File("random")} 10M 300000", raw));
        Ok(Img("convert", "-O", "vmdk", "-o", $"subformat={subformat}", raw, dir.File("theirs.vmdk")));
        Ok(VdiskRun("convert", "-O", "vmdk", "-o", $"subformat={subformat}", raw, dir.File("mine.vmdk")));
        AssertClean(dir.File("mine.vmdk"));
        AssertIdentical(raw, dir.File("mine.vmdk"));
        Assert.Equal(Img("map", "--output=json", dir.File("theirs.vmdk")).Stdout.Replace("theirs", "X"),
            Img("map", "--output=json", dir.File("mine.vmdk")).Stdout.Replace("mine", "X"));
    }

    [Fact]
    public void ConvertFromVmdk_ToQcow2AndRaw_IsIdenticalToTheSource()
    {
        using var dir = new TempDir();
        string img = dir.File("disk.vmdk");
        Ok(Img("create", "-q", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentSparse", img, "3G"));
        Ok(Io([.. Commands(Workload), "-f", "vmdk", img]));
        Ok(VdiskRun("convert", "-f", "vmdk", "-O", "qcow2", img, dir.File("out.qcow2")));
        AssertClean(dir.File("out.qcow2"));
        AssertIdentical(img, dir.File("out.qcow2"));
        AssertSame("compare", "-f", "vmdk", "-F", "qcow2", img, dir.File("out.qcow2"));
    }

    [Fact]
    public void StreamOptimized_TakesEachGrainOnceAsQemu()
    {
        using var dir = new TempDir();
        string theirs = dir.File("theirs.vmdk"), mine = dir.File("mine.vmdk");
        Ok(Img("create", "-q", "-f", "vmdk", "-o", "subformat=streamOptimized", theirs, "1M"));
        Ok(Img("create", "-q", "-f", "vmdk", "-o", "subformat=streamOptimized", mine, "1M"));
        foreach (var cmd in new[] { "write -P 1 0 64k", "write -P 2 0 64k", "write -P 3 70k 4k", "write -z 128k 64k", "write -P 4 960k 64k", "write -c -P 5 192k 64k" })
        {
            var q = Io("-f", "vmdk", "-c", cmd, theirs);
            var v = VdiskRun("io", "-f", "vmdk", "-c", cmd, mine);
            Assert.Equal(Seen(q).Split("\n").Where(l => !l.Contains("ops/sec")).Aggregate("", (a, l) => a + l + "\n"),
                Seen(v).Split("\n").Where(l => !l.Contains("ops/sec")).Aggregate("", (a, l) => a + l + "\n"));
        }
        AssertClean(mine);
        AssertIdentical(mine, theirs);
    }

    [Fact]
    public void Resize_IsRefusedAsQemuImg()
    {
        using var dir = new TempDir();
        string img = dir.File("disk.vmdk");
        Ok(Img("create", "-q", "-f", "vmdk", img, "1M"));
        AssertSame("resize", img, "2M");
        AssertSame("check", "-r", "all", img);
    }
}
