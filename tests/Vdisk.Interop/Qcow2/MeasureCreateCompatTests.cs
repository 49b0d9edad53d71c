using Xunit;

using Vdisk.Interop.Support;

namespace Vdisk.Interop.Qcow2;

/// <summary>qemu-img measure and create, side by side with qemu-img 7.2: output, exit code and the files left behind.</summary>
public class MeasureCreateCompatTests
{
    private static void Img(string dir, params string[] args) => Qemu.Ok(SideBySide.RunIn(dir, "qemu-img", args));

    private static void Prepare(string dir)
    {
        Img(dir, "create", "-q", "-f", "qcow2", "s.qcow2", "4M");
        Qemu.Ok(SideBySide.RunIn(dir, "qemu-io", ["-c", "write -P 1 0 64k", "-c", "write -z 1M 64k", "s.qcow2"]));
        Img(dir, "create", "-q", "-f", "qcow2", "-o", "compat=0.10", "v2.qcow2", "4M");
        Img(dir, "create", "-q", "-f", "raw", "r.raw", "3M");
    }

    [Theory]
    [InlineData("-O raw --size 1G")]
    [InlineData("--size 1G")]
    [InlineData("--size 1000")]
    [InlineData("--size 1E")]
    [InlineData("s.qcow2")]
    [InlineData("-O raw s.qcow2")]
    [InlineData("-O qcow2 s.qcow2")]
    [InlineData("-O qcow2 v2.qcow2")]
    [InlineData("-O qcow2 r.raw")]
    [InlineData("-O qcow2 -o compat=0.10 s.qcow2")]
    [InlineData("--output=json -O raw --size 1G")]
    [InlineData("--output=json -O qcow2 s.qcow2")]
    [InlineData("-O qcow2 --size 1000")]
    [InlineData("-O qcow2 --size 1E")]
    [InlineData("-O qcow2 -o cluster_size=512 --size 1P")]
    [InlineData("-O qcow2 -o cluster_size=2M --size 1E")]
    [InlineData("-O qcow2 -o preallocation=full --size 1M")]
    [InlineData("-O qcow2 -o preallocation=falloc s.qcow2")]
    [InlineData("-O qcow2 -o backing_file=x --size 1M")]
    [InlineData("-O qcow2 -o backing_file=x s.qcow2")]
    [InlineData("-O qcow2 -o refcount_bits=1 --size 1G")]
    [InlineData("-O qcow2 -o extended_l2=on --size 1G")]
    [InlineData("-O qcow2 -o extended_l2=on,cluster_size=4k --size 1G")]
    [InlineData("-O qcow2 -o size=5M --size 1M")]
    [InlineData("-O qcow2 -o compat=0.10,lazy_refcounts=on --size 1M")]
    [InlineData("-O raw -o preallocation=bogus --size 1M")]
    [InlineData("-O qcow2 -o nocow=on --size 1M")]
    [InlineData("-O qcow2 -o compat=v2 --size 1M")]
    [InlineData("-O qcow2 -o compat=0.10,refcount_bits=8 --size 1M")]
    [InlineData("-O qcow2 -o preallocation=bogus --size 1M")]
    [InlineData("-O qcow2 -o cluster_size=3k --size 1M")]
    [InlineData("-O qcow2 -o refcount_bits=3 --size 1M")]
    [InlineData("-O raw -o cluster_size=1k --size 1M")]
    [InlineData("-O qcow2 -o foo=1 --size 1M")]
    [InlineData("-O qcow2 -o ,, --size 1M")]
    [InlineData("-O vmdk --size 1G")]
    [InlineData("-O vmdk s.qcow2")]
    [InlineData("-O dmg --size 1G")]
    [InlineData("-O bogus --size 1G")]
    [InlineData("--size abc")]
    [InlineData("--size 9E")]
    [InlineData("--size -1")]
    [InlineData("s.qcow2 r.raw")]
    [InlineData("-f qcow2 --size 1M")]
    [InlineData("--size 1M s.qcow2")]
    [InlineData("")]
    public void Measure_matches_qemu_img(string args)
    {
        using var sides = new SideBySide(Prepare);
        sides.Same(["measure", .. args.Split(' ', StringSplitOptions.RemoveEmptyEntries)]);
    }

    [Theory]
    [InlineData("qcow2", "1000")]
    [InlineData("raw", "1000")]
    [InlineData("qcow2", "1E")]
    [InlineData("raw", "1E")]
    [InlineData("qcow2", "2P")]
    [InlineData("qcow2", "2251799813685760")]
    [InlineData("qcow2", "9223372036854775807")]
    [InlineData("raw", "9223372036854775807")]
    [InlineData("vpc", "9223372036854775807")]
    [InlineData("vdi", "9223372036854775807")]
    public void Create_rounds_sizes_up_to_sectors_and_leaves_what_qemu_img_leaves(string format, string size)
    {
        using var sides = new SideBySide();
        sides.Same("create", "-f", format, "new.img", size);
        sides.AssertSameFile("new.img");
        if (File.Exists(Path.Combine(sides.TheirDir, "new.img")) && new FileInfo(Path.Combine(sides.TheirDir, "new.img")).Length > 0)
            sides.AssertSameInfo("new.img", format);
    }

    /// <summary>
    /// file-posix writes the first block of a file it grows from empty (allocate_first_block, for
    /// later alignment probing), so qemu-img map shows 4 KiB of data at the start of a new raw
    /// image, or of a raw image converted from zeroes; the same map comes out of vdisk's image.
    /// </summary>
    [Theory]
    [InlineData("create -f raw new.img 1M")]
    [InlineData("create -f raw new.img 1000")]
    [InlineData("create -f vpc -o subformat=fixed new.img 1M")]
    [InlineData("convert -O raw -S 512 json:{'driver':'null-co','size':1048576,'read-zeroes':true} new.img")]
    [InlineData("resize -f raw empty.img 1M")]
    public void A_file_grown_from_empty_has_its_first_block_allocated(string args)
    {
        using var sides = new SideBySide(dir => File.WriteAllBytes(Path.Combine(dir, "empty.img"), []));
        sides.Same(args.Split(' '));
        string name = args.Contains("empty.img", StringComparison.Ordinal) ? "empty.img" : "new.img";
        var theirs = Qemu.Ok(Qemu.Img("map", "--output=json", "-f", args.Contains("vpc", StringComparison.Ordinal) ? "vpc" : "raw", Path.Combine(sides.TheirDir, name)));
        var mine = Qemu.Ok(Qemu.Img("map", "--output=json", "-f", args.Contains("vpc", StringComparison.Ordinal) ? "vpc" : "raw", Path.Combine(sides.MyDir, name)));
        Assert.Equal(theirs.Stdout, mine.Stdout);
    }

    /// <summary>A qcow2 creation that fails once the file exists deletes the file, even one that was there before (qcow2_co_create_opts).</summary>
    [Theory]
    [InlineData("-o cluster_size=1000")]
    [InlineData("-o compat=9")]
    [InlineData("-o compat=0.10,lazy_refcounts=on")]
    [InlineData("-o preallocation=bogus")]
    [InlineData("-o compression_type=bogus")]
    [InlineData("-o backing_fmt=qcow2")]
    [InlineData("-o refcount_bits=3")]
    [InlineData("-o compat=0.10,refcount_bits=8")]
    [InlineData("-o compat=0.10,compression_type=zstd")]
    public void Create_qcow2_refused_after_the_file_exists_removes_it(string options)
    {
        using var sides = new SideBySide(dir => File.WriteAllText(Path.Combine(dir, "old.qcow2"), "precious"));
        sides.Same(["create", "-f", "qcow2", .. options.Split(' '), "old.qcow2", "1M"]);
        sides.AssertSameFile("old.qcow2");
    }

    [Theory]
    [InlineData("-f raw -o preallocation=bogus x.img 1M")]
    [InlineData("-f raw -o preallocation=metadata x.img 1M")]
    [InlineData("-f raw -o preallocation=full,nocow=off,extent_size_hint=0,size=1k x.img")]
    [InlineData("-f qcow2 -o nocow=on,extent_size_hint=1M,preallocation=off x.img 1M")]
    [InlineData("-f qcow2 -o lazy_refcounts x.img 1M")]
    [InlineData("-f qcow2 -o nolazy_refcounts,compat=0.10,data_file_raw=off x.img 1M")]
    [InlineData("-f qcow2 -o refcount_bits=0x10 x.img 1M")]
    [InlineData("-f qcow2 -o refcount_bits=-1 x.img 1M")]
    [InlineData("-f qcow2 -o refcount_bits=99999999999999999999 x.img 1M")]
    [InlineData("-f qcow2 -o size=16E x.img")]
    [InlineData("-f qcow2 -o size=abc x.img")]
    [InlineData("-f qcow2 -o cluster_size=abc x.img 1M")]
    [InlineData("-f qcow2 -o size=1M x.img 1M")]
    [InlineData("-f qcow2 -o size=2M x.img")]
    [InlineData("-f raw -o nocow x.img 1M")]
    [InlineData("-f raw -o no x.img 1M")]
    [InlineData("-f raw -o a,,b=1 x.img 1M")]
    [InlineData("-f raw -o ,, x.img 1M")]
    [InlineData("-f raw -o a, x.img 1M")]
    [InlineData("-f raw -o preallocation=of,,f x.img 1M")]
    [InlineData("-f raw -b s.qcow2 x.img 1M")]
    [InlineData("-f raw -F raw x.img 1M")]
    [InlineData("-f qcow2 -o help x.img")]
    [InlineData("-f qcow2 -o help")]
    [InlineData("-f raw -o help x.img")]
    [InlineData("-f raw -o help")]
    [InlineData("-f qcow2 -o cluster_size=? x.img")]
    [InlineData("-f dmg x.img 1M")]
    [InlineData("-f dmg -o help")]
    [InlineData("-f bogus x.img 1M")]
    [InlineData("-f bogus -o help")]
    [InlineData("-f qcow2 x.img abc")]
    [InlineData("-f qcow2 x.img 9E")]
    [InlineData("-f qcow2 x.img 1M extra")]
    [InlineData("")]
    public void Create_options_are_checked_like_qemu_img(string args)
    {
        using var sides = new SideBySide(Prepare);
        sides.Same(["create", .. args.Split(' ', StringSplitOptions.RemoveEmptyEntries)]);
        sides.AssertSameFile("x.img");
    }
}
