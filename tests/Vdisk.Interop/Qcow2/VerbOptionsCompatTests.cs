using Xunit;

using Vdisk.Interop.Support;

namespace Vdisk.Interop.Qcow2;

/// <summary>
/// Option values and argument counts of convert, map, resize, commit, rebase and amend, side by
/// side with qemu-img 7.2: the same refusal (or acceptance), output, exit code and files.
/// </summary>
public class VerbOptionsCompatTests
{
    private static void Img(string dir, params string[] args) => Qemu.Ok(SideBySide.RunIn(dir, "qemu-img", args));

    private static void Io(string dir, string image, params string[] commands) =>
        Qemu.Ok(SideBySide.RunIn(dir, "qemu-io", [.. Qemu.Commands(commands), image]));

    private static void Prepare(string dir)
    {
        Img(dir, "create", "-q", "-f", "qcow2", "s.qcow2", "4M");
        Io(dir, "s.qcow2", "write -P 1 0 64k", "write -P 2 1M 1M");
        Img(dir, "create", "-q", "-f", "qcow2", "b.qcow2", "4M");
        Img(dir, "create", "-q", "-f", "raw", "small.raw", "1M");
    }

    private static string[] Split(string args) => args.Split(' ', StringSplitOptions.RemoveEmptyEntries);

    [Theory]
    [InlineData("-O qcow2 s.qcow2 nodir/o.img")]
    [InlineData("-O raw s.qcow2 nodir/o.img")]
    [InlineData("-S 100 s.qcow2 o.img")]
    [InlineData("-S 17M s.qcow2 o.img")]
    [InlineData("-S abc s.qcow2 o.img")]
    [InlineData("-S -1 s.qcow2 o.img")]
    [InlineData("-S 9E s.qcow2 o.img")]
    [InlineData("-S 16M s.qcow2 o.img")]
    [InlineData("-S 0x200 s.qcow2 o.img")]
    [InlineData("-S 1.5k s.qcow2 o.img")]
    [InlineData("-m abc s.qcow2 o.img")]
    [InlineData("-m 0 s.qcow2 o.img")]
    [InlineData("-m 17 s.qcow2 o.img")]
    [InlineData("-m 4k s.qcow2 o.img")]
    [InlineData("-m 0x4 s.qcow2 o.img")]
    [InlineData("-r abc s.qcow2 o.img")]
    [InlineData("-r 9E s.qcow2 o.img")]
    [InlineData("-r 1G s.qcow2 o.img")]
    [InlineData("-T bogus s.qcow2 o.img")]
    [InlineData("-t bogus s.qcow2 o.img")]
    [InlineData("-O bogus s.qcow2 o.img")]
    [InlineData("-O dmg s.qcow2 o.img")]
    [InlineData("-c -O raw s.qcow2 o.img")]
    [InlineData("-c -C -O qcow2 s.qcow2 o.img")]
    [InlineData("-C -S 4k s.qcow2 o.img")]
    [InlineData("-C s.qcow2 o.img")]
    [InlineData("-o foo=1 -O raw s.qcow2 o.img")]
    [InlineData("-o ,, -O raw s.qcow2 o.img")]
    [InlineData("-o preallocation=bogus -O raw s.qcow2 o.img")]
    [InlineData("-o preallocation=metadata -O raw s.qcow2 o.img")]
    [InlineData("-o cluster_size=1000 -O qcow2 s.qcow2 o.img")]
    [InlineData("-o cluster_size=abc -O qcow2 s.qcow2 o.img")]
    [InlineData("-o compat=9 -O qcow2 s.qcow2 o.img")]
    [InlineData("-o lazy_refcounts=abc -O qcow2 s.qcow2 o.img")]
    [InlineData("-o size=1M -O qcow2 s.qcow2 o.img")]
    [InlineData("-o preallocation=full -c -O qcow2 s.qcow2 o.img")]
    [InlineData("-o preallocation=off -c -O qcow2 s.qcow2 o.img")]
    [InlineData("-o backing_fmt=qcow2 -O qcow2 s.qcow2 o.img")]
    [InlineData("-o backing_file=b.qcow2 -O qcow2 s.qcow2 o.img")]
    [InlineData("-B b.qcow2 -O qcow2 s.qcow2 o.img")]
    [InlineData("-B b.qcow2 -O raw s.qcow2 o.img")]
    [InlineData("-F qcow2 -O raw s.qcow2 o.img")]
    [InlineData("-B nonexist -F qcow2 -O qcow2 s.qcow2 o.img")]
    [InlineData("-B b.qcow2 -F qcow2 -O qcow2 s.qcow2 s.qcow2 o.img")]
    [InlineData("--target-is-zero s.qcow2 o.img")]
    [InlineData("-n --target-is-zero -B b.qcow2 s.qcow2 small.raw")]
    [InlineData("-n -o compat=1.1 s.qcow2 small.raw")]
    [InlineData("--target-image-opts s.qcow2 o.img")]
    [InlineData("-O qcow2 -o help")]
    [InlineData("-o help")]
    [InlineData("-o help s.qcow2 o.img")]
    [InlineData("s.qcow2")]
    [InlineData("")]
    [InlineData("-Z s.qcow2 o.img")]
    [InlineData("--bogus s.qcow2 o.img")]
    [InlineData("nonexist o.img")]
    public void Convert_options(string args)
    {
        using var sides = new SideBySide(Prepare);
        sides.Same(["convert", .. Split(args)]);
        sides.AssertSameFile("o.img");
    }

    [Theory]
    [InlineData("--start-offset=-1 s.qcow2")]
    [InlineData("--start-offset=abc s.qcow2")]
    [InlineData("--start-offset=9E s.qcow2")]
    [InlineData("--max-length=abc s.qcow2")]
    [InlineData("--max-length=-5 s.qcow2")]
    [InlineData("--start-offset=1k --max-length=1k s.qcow2")]
    [InlineData("--start-offset=1M --max-length=64k s.qcow2")]
    [InlineData("--start-offset=5M s.qcow2")]
    [InlineData("--output=json --start-offset=0x10000 s.qcow2")]
    [InlineData("s.qcow2 b.qcow2")]
    [InlineData("")]
    [InlineData("--image-opts driver=qcow2,file.filename=s.qcow2,l2-cache-size=16E")]
    [InlineData("--image-opts driver=qcow2,file.filename=s.qcow2,cache-clean-interval=x")]
    [InlineData("--image-opts driver=qcow2,file.filename=s.qcow2,cache-clean-interval=-1")]
    [InlineData("--image-opts driver=qcow2,file.filename=s.qcow2,lazy-refcounts=x")]
    [InlineData("--image-opts driver=qcow2,file.filename=s.qcow2,pass-discard-request=x")]
    [InlineData("--image-opts driver=qcow2,file.filename=s.qcow2,overlap-check=x")]
    [InlineData("--image-opts driver=qcow2,file.filename=s.qcow2,overlap-check=none")]
    [InlineData("--image-opts driver=qcow2,file.filename=s.qcow2,overlap-check.template=x")]
    [InlineData("--image-opts driver=qcow2,file.filename=s.qcow2,l2-cache-entry-size=1000")]
    [InlineData("--image-opts driver=qcow2,file.filename=s.qcow2,l2-cache-entry-size=1M")]
    [InlineData("--image-opts driver=qcow2,file.filename=s.qcow2,cache-size=1M,l2-cache-size=2M")]
    [InlineData("--image-opts driver=qcow2,file.filename=s.qcow2,cache-size=1M,l2-cache-size=512k,refcount-cache-size=512k")]
    [InlineData("--image-opts driver=qcow2,file.filename=s.qcow2,l2-cache-size=1M,cache-clean-interval=30")]
    public void Map_options(string args)
    {
        using var sides = new SideBySide(Prepare);
        sides.Same(["map", .. Split(args)]);
    }

    /// <summary>
    /// A malformed size in --image-opts: qemu-img adds two lines on the suffixes; vdisk keeps an
    /// open error to one line (docs/compatibility.md), the first line being qemu-img's.
    /// </summary>
    [Theory]
    [InlineData("l2-cache-size=abc")]
    [InlineData("cache-size=abc")]
    [InlineData("refcount-cache-size=x")]
    [InlineData("l2-cache-entry-size=x")]
    public void Malformed_cache_sizes_are_refused(string option)
    {
        using var sides = new SideBySide(Prepare);
        var (theirs, mine) = sides.Run("map", "--image-opts", "driver=qcow2,file.filename=s.qcow2," + option);
        Assert.Equal(1, theirs.ExitCode);
        Assert.Equal(1, mine.ExitCode);
        Assert.Equal(theirs.Stderr.Replace("qemu-img: ", "vdisk: ", StringComparison.Ordinal).Split('\n')[0] + "\n", mine.Stderr);
        Assert.Equal("", mine.Stdout);
    }

    [Theory]
    [InlineData("s.qcow2 abc")]
    [InlineData("s.qcow2 +abc")]
    [InlineData("s.qcow2 16E")]
    [InlineData("s.qcow2 8E")]
    [InlineData("s.qcow2")]
    [InlineData("-q s.qcow2")]
    [InlineData("s.qcow2 8M 9M")]
    [InlineData("--preallocation=bogus s.qcow2 8M")]
    [InlineData("--preallocation=full s.qcow2 4M")]
    [InlineData("--preallocation=full s.qcow2 1M")]
    [InlineData("s.qcow2 1000")]
    [InlineData("s.qcow2 -5M")]
    [InlineData("s.qcow2 +0")]
    [InlineData("s.qcow2 +1M")]
    [InlineData("s.qcow2 4E")]
    public void Resize_options(string args)
    {
        using var sides = new SideBySide(Prepare);
        sides.Same(["resize", .. Split(args)]);
        sides.AssertSameInfo("s.qcow2");
    }

    /// <summary>
    /// iotest 106: growing a raw image with falloc or full preallocation reserves the grown part on
    /// disk (du counts it), as qemu-img's resize does, whatever the image was created with.
    /// </summary>
    [Theory]
    [InlineData("off", "falloc")]
    [InlineData("off", "full")]
    [InlineData("falloc", "falloc")]
    [InlineData("full", "full")]
    [InlineData("falloc", "off")]
    public void Resize_raw_with_preallocation_reserves_the_grown_part_like_qemu_img(string created, string grown)
    {
        using var sides = new SideBySide(dir => Img(dir, "create", "-q", "-f", "raw", "-o", $"preallocation={created}", "r.img", "128K"));
        sides.Same("resize", "-f", "raw", $"--preallocation={grown}", "r.img", "+256K");
        long KibUsed(string dir) => long.Parse(SideBySide.RunIn(dir, "du", ["-k", "r.img"]).Stdout.Split('\t')[0], System.Globalization.CultureInfo.InvariantCulture);
        long theirs = KibUsed(sides.TheirDir), mine = KibUsed(sides.MyDir);
        Assert.True(theirs >= (created == "off" ? 0 : 128) + (grown == "off" ? 0 : 256), $"qemu-img left {theirs} KiB");
        Assert.Equal(theirs, mine);
        sides.AssertSameFile("r.img");
    }

    [Theory]
    [InlineData("compare")]
    [InlineData("compare s.qcow2")]
    [InlineData("compare s.qcow2 b.qcow2 x")]
    [InlineData("compare -T bogus s.qcow2 b.qcow2")]
    [InlineData("compare -p -T bogus s.qcow2 b.qcow2")]
    [InlineData("compare -Z s.qcow2 b.qcow2")]
    [InlineData("compare -p s.qcow2 s.qcow2")]
    [InlineData("compare -p s.qcow2 b.qcow2")]
    [InlineData("compare -p c1.qcow2 c2.qcow2")]
    [InlineData("compare -p c2.qcow2 c1.qcow2")]
    [InlineData("compare -p -s c1.qcow2 c2.qcow2")]
    [InlineData("compare -p c1.qcow2 c3.qcow2")]
    [InlineData("compare -s s.qcow2 s.qcow2")]
    [InlineData("compare -s c2.qcow2 c4.qcow2")]
    [InlineData("compare -q c1.qcow2 c3.qcow2")]
    [InlineData("compare -f qcow2 -F raw s.qcow2 small.raw")]
    [InlineData("compare s.qcow2 nonexist")]
    [InlineData("check")]
    [InlineData("check s.qcow2 b.qcow2")]
    [InlineData("check -r bogus s.qcow2")]
    [InlineData("check -T bogus s.qcow2")]
    [InlineData("check -T bogus --output=xml s.qcow2")]
    [InlineData("check --output=xml")]
    [InlineData("check -Z s.qcow2")]
    [InlineData("snapshot")]
    [InlineData("snapshot -l")]
    [InlineData("snapshot s.qcow2")]
    [InlineData("snapshot -l s.qcow2 x")]
    [InlineData("snapshot -l -c x s.qcow2")]
    [InlineData("snapshot -Z s.qcow2")]
    [InlineData("map --output=xml")]
    [InlineData("measure --output=xml --size abc")]
    [InlineData("measure --size abc --output=xml")]
    public void Compare_check_snapshot_options(string args)
    {
        using var sides = new SideBySide(dir =>
        {
            Prepare(dir);
            Img(dir, "create", "-q", "-f", "qcow2", "c1.qcow2", "8M");
            Io(dir, "c1.qcow2", "write -P 1 0 3M");
            Img(dir, "create", "-q", "-f", "qcow2", "c2.qcow2", "6M");
            Io(dir, "c2.qcow2", "write -P 1 0 3M", "write -z 4M 1M");
            Img(dir, "create", "-q", "-f", "qcow2", "c3.qcow2", "6M");
            Io(dir, "c3.qcow2", "write -P 1 0 3M", "write -P 0 4M 1M", "write -P 9 5M 4k");
            Img(dir, "create", "-q", "-f", "qcow2", "c4.qcow2", "6M");
            Io(dir, "c4.qcow2", "write -P 1 0 3M");
        });
        sides.Same(Split(args));
    }

    /// <summary>Every option of the qemu-img verbs says what it does in --help.</summary>
    [Theory]
    [InlineData("convert")]
    [InlineData("create")]
    [InlineData("commit")]
    [InlineData("rebase")]
    [InlineData("amend")]
    [InlineData("resize")]
    [InlineData("map")]
    [InlineData("measure")]
    [InlineData("compare")]
    [InlineData("check")]
    [InlineData("snapshot")]
    public void Every_option_has_a_help_text(string verb)
    {
        var help = Qemu.Ok(Qemu.Vdisk(verb, "--help")).Stdout.Split('\n');
        var options = help.SkipWhile(l => l != "Options:").Skip(1).TakeWhile(l => l.Length > 0).ToList();
        Assert.NotEmpty(options);
        // An option line is "  names  description"; a line of names alone has no description.
        var bare = options.Where(l => l.StartsWith("  -", StringComparison.Ordinal) && System.Text.RegularExpressions.Regex.Split(l.Trim(), @"\s{2,}").Length < 2).ToList();
        Assert.True(bare.Count == 0, "options without a help text:\n" + string.Join('\n', bare));
    }
}
