using Xunit;

using Vdisk.Interop.Support;

namespace Vdisk.Interop.Qcow2;

/// <summary>commit, rebase and amend side by side with qemu-img 7.2: output, exit code and what the images hold afterwards.</summary>
public class ChainVerbsCompatTests
{
    private static void Img(string dir, params string[] args) => Qemu.Ok(SideBySide.RunIn(dir, "qemu-img", args));

    private static void Io(string dir, string image, params string[] commands) =>
        Qemu.Ok(SideBySide.RunIn(dir, "qemu-io", [.. Qemu.Commands(commands), image]));

    /// <summary>base (1 in the first MiB) &lt;- mid (2 in the second, zeroes in the fourth) &lt;- top (3 in the third).</summary>
    private static void Chain(string dir)
    {
        Img(dir, "create", "-q", "-f", "qcow2", "base.qcow2", "4M");
        Io(dir, "base.qcow2", "write -P 1 0 1M", "write -P 9 3M 1M");
        Img(dir, "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "mid.qcow2");
        Io(dir, "mid.qcow2", "write -P 2 1M 1M", "write -z 3M 512k");
        Img(dir, "create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", "top.qcow2");
        Io(dir, "top.qcow2", "write -P 3 2M 1M");
    }

    private static void AssertChainUnchangedAbove(SideBySide sides)
    {
        foreach (var image in new[] { "top.qcow2", "mid.qcow2", "base.qcow2" })
        {
            sides.AssertSameImage(image, compareHostOffsets: false);
            sides.AssertSameInfo(image);
        }
    }

    [Theory]
    [InlineData("-b base.qcow2 top.qcow2")]
    [InlineData("-b mid.qcow2 top.qcow2")]
    [InlineData("top.qcow2")]
    [InlineData("-d top.qcow2")]
    [InlineData("-b nonexist top.qcow2")]
    [InlineData("-b top.qcow2 top.qcow2")]
    [InlineData("base.qcow2")]
    [InlineData("-r abc top.qcow2")]
    [InlineData("-t bogus top.qcow2")]
    [InlineData("")]
    [InlineData("top.qcow2 mid.qcow2")]
    public void Commit(string args)
    {
        using var sides = new SideBySide(Chain);
        sides.Same(["commit", .. args.Split(' ', StringSplitOptions.RemoveEmptyEntries)]);
        AssertChainUnchangedAbove(sides);
    }

    /// <summary>
    /// qcow2_make_empty of a v3 top without snapshots is make_completely_empty: the file is cut
    /// to the header, refcount table, refcount block and L1 table, so what is written next lands
    /// where QEMU puts it.
    /// </summary>
    [Fact]
    public void Commit_empties_a_v3_top_down_to_its_first_clusters_as_qemu_does()
    {
        using var sides = new SideBySide(Chain);
        sides.Same("commit", "top.qcow2");
        sides.AssertSameFile("top.qcow2");
        foreach (string dir in new[] { sides.TheirDir, sides.MyDir }) Io(dir, "top.qcow2", "write -P 4 1M 128k");
        sides.Same("check", "top.qcow2");
        sides.AssertSameImage("top.qcow2");
    }

    /// <summary>
    /// An I/O error injected at each of make_completely_empty's blkdebug events (iotest 098) fails
    /// the commit with QEMU's message and leaves the top image as QEMU leaves it: what check finds
    /// there (leaks, or refcounts gone with the zeroed table) is the same.
    /// </summary>
    [Theory]
    [InlineData("l1_update")]
    [InlineData("empty_image_prepare")]
    [InlineData("reftable_update")]
    [InlineData("refblock_alloc")]
    public void Commit_with_an_error_injected_while_emptying_leaves_the_top_as_qemu_does(string blkdebugEvent)
    {
        using var sides = new SideBySide(dir =>
        {
            Img(dir, "create", "-q", "-f", "qcow2", "base.qcow2", "64M");
            Img(dir, "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "top.qcow2", "64M");
            Io(dir, "top.qcow2", "write 0 64k");
            File.WriteAllText(Path.Combine(dir, "blkdebug.conf"), $"[inject-error]\nevent = \"{blkdebugEvent}\"\n");
        });
        var (_, mine) = sides.Same("commit", "blkdebug:blkdebug.conf:top.qcow2");
        Assert.Contains("Failed to empty", mine.Stderr);
        sides.AssertSameFile("top.qcow2");
        var theirCheck = SideBySide.RunIn(sides.TheirDir, "qemu-img", ["check", "top.qcow2"]);
        var myCheck = SideBySide.RunIn(sides.MyDir, "qemu-img", ["check", "top.qcow2"]);
        SideBySide.AssertSameOutput(theirCheck, myCheck);
    }

    [Fact]
    public void Commit_b_with_a_path_from_elsewhere_finds_the_base_relative_to_the_overlay()
    {
        using var sides = new SideBySide(dir =>
        {
            Directory.CreateDirectory(Path.Combine(dir, "sub"));
            Chain(Path.Combine(dir, "sub"));
        });
        sides.Same("commit", "-b", "base.qcow2", "sub/top.qcow2");
        sides.Same("compare", "sub/top.qcow2", "sub/base.qcow2");
    }

    [Theory]
    [InlineData("-b mid.qcow2 top.qcow2")]
    [InlineData("-b mid.qcow2 -F qcow2 top.qcow2")]
    [InlineData("-b base.qcow2 top.qcow2")]
    [InlineData("-b base.qcow2 -F qcow2 top.qcow2")]
    [InlineData("-b other.qcow2 top.qcow2")]
    [InlineData("-b other.qcow2 -F qcow2 top.qcow2")]
    [InlineData("-b '' top.qcow2")]
    [InlineData("-b '' -F qcow2 top.qcow2")]
    [InlineData("-u -b other.qcow2 top.qcow2")]
    [InlineData("-u -b other.qcow2 -F qcow2 top.qcow2")]
    [InlineData("-u top.qcow2")]
    [InlineData("-b nonexist top.qcow2")]
    [InlineData("-b other.qcow2 -F bogus top.qcow2")]
    [InlineData("top.qcow2")]
    [InlineData("-b other.qcow2")]
    [InlineData("-t bogus -b other.qcow2 -F qcow2 top.qcow2")]
    [InlineData("-T bogus -b other.qcow2 -F qcow2 top.qcow2")]
    public void Rebase(string args)
    {
        using var sides = new SideBySide(dir =>
        {
            Chain(dir);
            Img(dir, "create", "-q", "-f", "qcow2", "other.qcow2", "2M");
            Io(dir, "other.qcow2", "write -P 1 0 512k", "write -P 7 512k 1M");
        });
        sides.Same(["rebase", .. args.Split(' ', StringSplitOptions.RemoveEmptyEntries).Select(a => a == "''" ? "" : a)]);
        sides.AssertSameImage("top.qcow2");
        sides.AssertSameInfo("top.qcow2");
    }

    /// <summary>
    /// new (5 clusters of 0x11) &lt;- old (4 clusters of 0x22) &lt;- top (5 clusters): top reads zeroes in
    /// its last cluster because old ends before it. Rebasing onto new, an image of the same chain,
    /// must write those zeroes into top (iotest 024's last case), not let new's 0x11 show through.
    /// </summary>
    [Fact]
    public void Rebase_onto_own_chain_past_the_end_of_a_shorter_old_backing_keeps_the_zeroes()
    {
        using var sides = new SideBySide(dir =>
        {
            Img(dir, "create", "-q", "-f", "qcow2", "new.qcow2", "320k");
            Img(dir, "create", "-q", "-f", "qcow2", "-b", "new.qcow2", "-F", "qcow2", "old.qcow2", "256k");
            Img(dir, "create", "-q", "-f", "qcow2", "-b", "old.qcow2", "-F", "qcow2", "top.qcow2", "320k");
            Io(dir, "new.qcow2", "write -P 0x11 0 320k");
            Io(dir, "old.qcow2", "write -P 0x22 0 256k");
        });
        sides.Same("rebase", "-b", "new.qcow2", "-F", "qcow2", "top.qcow2");
        sides.Same("map", "--output=json", "top.qcow2");
        var afterVdisk = SideBySide.RunIn(sides.MyDir, "qemu-io", [.. Qemu.Commands(["read -P 0x22 0 256k", "read -P 0 256k 64k"]), "top.qcow2"]);
        Assert.DoesNotContain("Pattern verification failed", afterVdisk.Stdout);
        sides.AssertSameImage("top.qcow2");
    }

    [Theory]
    [InlineData("-b base.qcow2 -F qcow2", "-o backing_file=mid.qcow2")]
    [InlineData("-b base.qcow2 -F qcow2", "-o backing_file=base.qcow2")]
    [InlineData("-b base.qcow2 -F qcow2", "-o backing_file=base.qcow2,backing_fmt=qcow2")]
    [InlineData("-b base.qcow2 -F qcow2", "-o backing_fmt=raw")]
    [InlineData("", "-o backing_file=mid.qcow2")]
    [InlineData("", "-o backing_file=")]
    [InlineData("-o compat=0.10", "-o compat=1.1,backing_file=x")]
    [InlineData("", "-o compat=0.10,lazy_refcounts=off")]
    [InlineData("", "-o lazy_refcounts=off,compat=0.10")]
    [InlineData("", "-o compat=0.10,lazy_refcounts=on")]
    [InlineData("-o compat=0.10", "-o lazy_refcounts=off")]
    [InlineData("-o compat=0.10", "-o lazy_refcounts=on")]
    [InlineData("-o compat=0.10", "-o compat=1.1,lazy_refcounts=on")]
    [InlineData("-o lazy_refcounts=on", "-o compat=0.10")]
    [InlineData("-o compression_type=zstd", "-o compat=0.10")]
    [InlineData("-o refcount_bits=8", "-o compat=0.10")]
    [InlineData("-o compat=0.10", "-o refcount_bits=8")]
    [InlineData("", "-o lazy_refcounts=on,backing_file=x")]
    [InlineData("", "-o compat=0.10,size=2M,backing_file=x")]
    [InlineData("-o compat=0.10", "-o lazy_refcounts=on,refcount_bits=8")]
    [InlineData("-o compat=0.10", "-o lazy_refcounts=on,size=2M")]
    [InlineData("-o compat=0.10", "-o size=1000,refcount_bits=8")]
    [InlineData("", "-o size=1000,lazy_refcounts=on")]
    [InlineData("", "-o refcount_bits=16")]
    [InlineData("", "-o refcount_bits=3")]
    [InlineData("", "-o refcount_bits=abc")]
    [InlineData("", "-o cluster_size=4k")]
    [InlineData("", "-o cluster_size=64k")]
    [InlineData("", "-o preallocation=full")]
    [InlineData("", "-o compression_type=zlib")]
    [InlineData("", "-o extended_l2=off")]
    [InlineData("", "-o nocow=on")]
    [InlineData("", "-o lazy_refcounts=abc")]
    [InlineData("", "-o compat=0.11")]
    [InlineData("", "-o size=abc")]
    [InlineData("", "-o size=2M")]
    [InlineData("", "-o size=1000")]
    [InlineData("", "-o size=0")]
    [InlineData("", "-o size=512k")]
    [InlineData("", "-o size=2M,compat=0.10")]
    [InlineData("", "-o foo=1")]
    [InlineData("", "-o data_file=x")]
    [InlineData("", "-o data_file_raw=on")]
    [InlineData("", "-o data_file_raw=off")]
    [InlineData("", "-o encrypt.new-secret=x")]
    [InlineData("", "-o help")]
    [InlineData("", "-o help -f qcow2")]
    [InlineData("", "-o help -f raw")]
    [InlineData("", "-o ,,")]
    [InlineData("", "")]
    [InlineData("", "-o compat=1.1 -f raw")]
    [InlineData("", "-t bogus -o compat=1.1")]
    public void Amend(string create, string amend)
    {
        using var sides = new SideBySide(dir =>
        {
            Img(dir, "create", "-q", "-f", "qcow2", "base.qcow2", "1M");
            Img(dir, ["create", "-q", "-f", "qcow2", .. create.Split(' ', StringSplitOptions.RemoveEmptyEntries), "a.qcow2", "1M"]);
            Io(dir, "a.qcow2", "write -P 5 0 64k", "write -z 128k 64k");
        });
        sides.Same(["amend", .. amend.Split(' ', StringSplitOptions.RemoveEmptyEntries), "a.qcow2"]);
        sides.AssertSameInfo("a.qcow2");
        sides.AssertSameImage("a.qcow2", compareHostOffsets: false);
        Qemu.AssertClean(Path.Combine(sides.MyDir, "a.qcow2"));
    }

    [Fact]
    public void Amend_downgrade_turns_zero_clusters_into_data_over_a_backing_file()
    {
        using var sides = new SideBySide(dir =>
        {
            Img(dir, "create", "-q", "-f", "qcow2", "base.qcow2", "1M");
            Io(dir, "base.qcow2", "write -P 4 0 1M");
            Img(dir, "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "a.qcow2");
            Io(dir, "a.qcow2", "write -z 0 64k", "write -z 256k 128k", "write -P 5 512k 64k", "write -z 520k 4k");
        });
        sides.Same("amend", "-o", "compat=0.10", "a.qcow2");
        sides.AssertSameInfo("a.qcow2");
        sides.AssertSameImage("a.qcow2", compareHostOffsets: false);
        Qemu.AssertClean(Path.Combine(sides.MyDir, "a.qcow2"));
    }
}
