using System.Text.RegularExpressions;
using Vdisk.Interop.Support;
using Xunit;

namespace Vdisk.Interop.Qcow2;

/// <summary>
/// Persistent dirty bitmaps against QEMU 7.2: qemu-img bitmap side by side (output, exit code,
/// and the bitmaps left in the image), bits vdisk stores read back by real qemu-nbd -B, bits
/// real QEMU stores read back by vdisk's qemu-nbd -B, convert --bitmaps and measure, and a
/// broken bitmap directory refused with QEMU's one line.
/// </summary>
public sealed partial class Qcow2BitmapInteropTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    /// <summary>qemu-img names its nodes #blockNNN with a counter of its own; only the name differs.</summary>
    [GeneratedRegex("#block[0-9]+")]
    private static partial Regex NodeName();

    private static RunResult Masked(RunResult r) => r with { Stderr = NodeName().Replace(r.Stderr, "#block") };

    private static void Prepare(string dir)
    {
        Qemu.Ok(SideBySide.RunIn(dir, "qemu-img", ["create", "-q", "-f", "qcow2", "a.qcow2", "10M"]));
        Qemu.Ok(SideBySide.RunIn(dir, "qemu-img", ["create", "-q", "-f", "qcow2", "huge.qcow2", "4T"]));
        Qemu.Ok(SideBySide.RunIn(dir, "qemu-img", ["create", "-q", "-f", "raw", "r.raw", "10M"]));
    }

    public static TheoryData<string> Steps => new()
    {
        "--add a.qcow2 b0 | --add -g 512k --disable a.qcow2 b1 | --add a.qcow2 b0",
        "--add a.qcow2 b0 | --disable a.qcow2 b0 | --enable a.qcow2 b0 | --clear a.qcow2 b0",
        "--add a.qcow2 b0 | --add --merge b0 a.qcow2 b1 | --remove --add a.qcow2 b0",
        "--add a.qcow2 b0 | --merge b0 -b r.raw -F raw a.qcow2 b0",
        "--add --granularity 1000 a.qcow2 x | --add -g 256 a.qcow2 x | --add -g 512 huge.qcow2 x",
        "--enable a.qcow2 missing | --remove a.qcow2 missing | --merge missing a.qcow2 missing",
        "a.qcow2 b0 | --clear -g 64k a.qcow2 b0 | -F raw --merge x a.qcow2 x | -b r.raw --clear a.qcow2 x | --add a.qcow2",
        "--add -f raw r.raw b0 | --add --image-opts driver=qcow2,file.driver=file,file.filename=a.qcow2 b0",
    };

    [Theory]
    [MemberData(nameof(Steps))]
    public void Bitmap_verb_does_what_qemu_img_bitmap_does(string steps)
    {
        using var sides = new SideBySide(Prepare);
        foreach (var step in steps.Split(" | "))
        {
            var (theirs, mine) = sides.Run(["bitmap", .. step.Split(' ')]);
            SideBySide.AssertSameOutput(Masked(theirs), Masked(mine));
        }
        sides.AssertSameInfo("a.qcow2");
        Qemu.AssertClean(Path.Combine(sides.MyDir, "a.qcow2"));
    }

    private static readonly string[] s_writes = ["write 0 1M", "write -z 3M 64k", "discard 5M 128k", "write 9M 4k"];

    /// <summary>Bitmaps b0 (enabled, 64k) and b1 (enabled, 512k) and b2 (disabled), then the writes, all by <paramref name="imgProgram"/> and <paramref name="ioProgram"/>.</summary>
    private string MakeWithBitmaps(string name, string imgProgram, string ioProgram)
    {
        string img = _dir.File(name);
        Qemu.Ok(Programs.Run(imgProgram, "create", "-q", "-f", "qcow2", img, "10M"));
        Qemu.Ok(Programs.Run(imgProgram, "bitmap", "--add", img, "b0"));
        Qemu.Ok(Programs.Run(imgProgram, "bitmap", "--add", "-g", "512k", img, "b1"));
        Qemu.Ok(Programs.Run(imgProgram, "bitmap", "--add", "--disable", img, "b2"));
        Qemu.Ok(Programs.Run(ioProgram, ["-f", "qcow2", .. Qemu.Commands(s_writes), img], null));
        return img;
    }

    /// <summary>qemu-img map of each bitmap through an NBD server of <paramref name="nbdProgram"/> (x-dirty-bitmap reports dirty ranges as holes).</summary>
    private List<string> BitmapMaps(string img, string nbdProgram, string mapProgram)
    {
        string socket = _dir.File(Path.GetFileName(img) + "-" + Path.GetFileName(nbdProgram) + ".sock");
        var maps = new List<string>();
        using (Holder.Start(img, nbdProgram, ["-t", "-r", "-f", "qcow2", "-B", "b0", "-B", "b1", "-B", "b2", "-k", socket, img], bytes => bytes.Count > 0))
        {
            foreach (var b in new[] { "b0", "b1", "b2" })
                maps.Add(Qemu.Ok(Programs.Run(mapProgram, "map", "--output=json", "--image-opts",
                    $"driver=nbd,server.type=unix,server.path={socket},x-dirty-bitmap=qemu:dirty-bitmap:{b}")).Stdout);
        }
        return maps;
    }

    [Fact]
    public void Bits_vdisk_stores_are_the_bits_qemu_stores()
    {
        string theirs = MakeWithBitmaps("q.qcow2", "qemu-img", "qemu-io");
        string mine = MakeWithBitmaps("v.qcow2", Programs.VdiskAs("qemu-img"), Programs.VdiskAs("qemu-io"));
        Qemu.AssertClean(mine);
        Assert.Equal(Qemu.Ok(Qemu.Img("info", theirs)).Stdout.Split('\n')[4..].Where(l => !l.StartsWith("disk size", StringComparison.Ordinal)),
            Qemu.Ok(Qemu.Img("info", mine)).Stdout.Split('\n')[4..].Where(l => !l.StartsWith("disk size", StringComparison.Ordinal)));
        // Real qemu-nbd reads vdisk's bits as its own; the writes show in b0 and b1 only.
        var expected = BitmapMaps(theirs, "qemu-nbd", "qemu-img");
        var actual = BitmapMaps(mine, "qemu-nbd", "qemu-img");
        Assert.Equal(Offsetless(expected), Offsetless(actual));
        Assert.Contains("\"present\": false", expected[0]);
        Assert.DoesNotContain("\"present\": false", expected[2]);
        // vdisk's qemu-nbd exports QEMU's bits the way real qemu-nbd does, to both clients.
        Assert.Equal(Offsetless(expected), Offsetless(BitmapMaps(theirs, Programs.VdiskAs("qemu-nbd"), "qemu-img")));
        Assert.Equal(Offsetless(expected), Offsetless(BitmapMaps(theirs, Programs.VdiskAs("qemu-nbd"), Programs.VdiskAs("qemu-img"))));
    }

    [GeneratedRegex(@", ""offset"": [0-9]+")]
    private static partial Regex HostOffset();

    private static List<string> Offsetless(List<string> maps) => maps.Select(m => HostOffset().Replace(m, "")).ToList();

    [Fact]
    public void Convert_with_bitmaps_copies_them_as_qemu_img_convert_does()
    {
        string source = MakeWithBitmaps("src.qcow2", "qemu-img", "qemu-io");
        using var sides = new SideBySide(dir => File.Copy(source, Path.Combine(dir, "src.qcow2")));
        var (theirsRaw, mineRaw) = sides.Run("convert", "--bitmaps", "-O", "raw", "src.qcow2", "t.raw");
        SideBySide.AssertSameOutput(theirsRaw, mineRaw);
        sides.Same("convert", "--skip-broken-bitmaps", "-O", "qcow2", "src.qcow2", "t.qcow2");
        sides.Same("convert", "--bitmaps", "-O", "qcow2", "src.qcow2", "t.qcow2");
        sides.AssertSameInfo("t.qcow2");
        Qemu.AssertClean(Path.Combine(sides.MyDir, "t.qcow2"));
        Assert.Equal(Offsetless(BitmapMaps(Path.Combine(sides.TheirDir, "t.qcow2"), "qemu-nbd", "qemu-img")),
            Offsetless(BitmapMaps(Path.Combine(sides.MyDir, "t.qcow2"), "qemu-nbd", "qemu-img")));
        sides.Same("measure", "-O", "qcow2", "src.qcow2");
        sides.Same("measure", "--output=json", "-O", "qcow2", "-o", "cluster_size=4k", "src.qcow2");
    }

    [Fact]
    public void Inconsistent_bitmaps_are_reported_and_skipped_as_qemu_does()
    {
        string source = MakeWithBitmaps("src.qcow2", "qemu-img", "qemu-io");
        // A writer killed while the image was open leaves every bitmap in use.
        Qemu.Io("-c", "abort", source);
        using var sides = new SideBySide(dir => File.Copy(source, Path.Combine(dir, "src.qcow2")));
        sides.Same("convert", "--bitmaps", "-O", "qcow2", "src.qcow2", "t.qcow2");
        sides.Same("convert", "--bitmaps", "--skip-broken-bitmaps", "-O", "qcow2", "src.qcow2", "t.qcow2");
        sides.Same("bitmap", "--clear", "src.qcow2", "b0");
        sides.Same("bitmap", "--remove", "src.qcow2", "b0");
        sides.Same("bitmap", "--add", "src.qcow2", "new");
        sides.AssertSameInfo("src.qcow2");
        Qemu.AssertClean(Path.Combine(sides.MyDir, "src.qcow2"));
    }

    [Fact]
    public void Broken_bitmap_directory_is_one_line_naming_the_file()
    {
        string img = _dir.File("broken.qcow2");
        Qemu.Ok(Qemu.Img("create", "-q", "-f", "qcow2", img, "10M"));
        Qemu.Ok(Qemu.Img("bitmap", "--add", img, "b0"));
        // The granularity byte of the only entry: 2^5 bytes is under the minimum.
        long directory = Qcow2DirectoryOffset(img);
        FormatCompat.Patch(img, directory + 17, [5]);
        var theirs = Qemu.Img("info", img);
        var mine = Qemu.Vdisk("info", img);
        Assert.Equal(1, mine.ExitCode);
        Assert.Equal(theirs.ExitCode, mine.ExitCode);
        Assert.Equal($"vdisk: Could not open '{img}': Bitmap 'b0' doesn't satisfy the constraints\n", mine.Stderr);
        Assert.Equal(theirs.Stderr.Replace("qemu-img: ", "vdisk: ", StringComparison.Ordinal), mine.Stderr);
        Assert.Equal(theirs.ExitCode, Qemu.Vdisk("check", img).ExitCode);
    }

    [Fact]
    public void Bitmaps_touched_by_a_program_without_bitmap_support_are_dropped_with_qemus_warning()
    {
        using var sides = new SideBySide(dir =>
        {
            Qemu.Ok(SideBySide.RunIn(dir, "qemu-img", ["create", "-q", "-f", "qcow2", "x.qcow2", "10M"]));
            Qemu.Ok(SideBySide.RunIn(dir, "qemu-img", ["bitmap", "--add", "x.qcow2", "b0"]));
            // Autoclear bit 0 cleared, as a writer that does not know bitmaps leaves it.
            FormatCompat.Patch(Path.Combine(dir, "x.qcow2"), 95, [0]);
        });
        var (theirs, mine) = sides.Same("check", "x.qcow2");
        // error_printf: the notice ends without a newline.
        Assert.Contains("vdisk: warning: a program lacking bitmap support modified this file", mine.Stderr);
        Assert.Contains("run 'qemu-img check -r' on the image file to fix.Leaked cluster", mine.Stderr);
        sides.Same("bitmap", "--add", "x.qcow2", "b1");
        sides.AssertSameInfo("x.qcow2");
        Assert.Equal(theirs.ExitCode, mine.ExitCode);
    }

    /// <summary>The bitmap directory offset from the bitmaps header extension.</summary>
    private static long Qcow2DirectoryOffset(string img)
    {
        var cluster0 = FormatCompat.Read(img, 0, 4096);
        int pos = (int)System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(cluster0.AsSpan(100));
        while (true)
        {
            uint type = System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(cluster0.AsSpan(pos));
            int length = (int)System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(cluster0.AsSpan(pos + 4));
            Assert.NotEqual(0u, type);
            if (type == 0x23852875) return (long)System.Buffers.Binary.BinaryPrimitives.ReadUInt64BigEndian(cluster0.AsSpan(pos + 24));
            pos += 8 + ((length + 7) & ~7);
        }
    }
}
