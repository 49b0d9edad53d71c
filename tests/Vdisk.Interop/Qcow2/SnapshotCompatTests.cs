using System.Text.RegularExpressions;
using Xunit;

using Vdisk.Interop.Support;

namespace Vdisk.Interop.Qcow2;

/// <summary>
/// qemu-img snapshot -c/-a/-d side by side with qemu-img 7.2, with real qemu-io writing between
/// the steps: the same messages and exit codes, and after every step the same qemu-img check
/// verdict (refcounts and COPIED flags), the same snapshot list (dates masked) and the same
/// guest contents.
/// </summary>
public partial class SnapshotCompatTests
{
    [GeneratedRegex(@"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")]
    private static partial Regex Date();

    private static void Step(SideBySide sides, string[] step)
    {
        if (step[0] == "io")
        {
            foreach (var dir in new[] { sides.TheirDir, sides.MyDir })
                Qemu.Ok(SideBySide.RunIn(dir, "qemu-io", [.. Qemu.Commands(step[1..]), "s.qcow2"]));
            return;
        }
        // A listing shows the creation times, which differ: it is compared below with them masked.
        if (step[1] != "-l") sides.Same(step);
        foreach (var args in new[] { new[] { "check", "s.qcow2" }, ["snapshot", "-l", "s.qcow2"] })
        {
            var theirs = SideBySide.RunIn(sides.TheirDir, "qemu-img", args);
            var mine = SideBySide.RunIn(sides.MyDir, "qemu-img", args);
            Assert.Equal(theirs.ExitCode, mine.ExitCode);
            Assert.Equal(Date().Replace(theirs.Stdout, "DATE"), Date().Replace(mine.Stdout, "DATE"));
            Assert.Equal(theirs.Stderr, mine.Stderr);
        }
        Qemu.AssertIdentical(Path.Combine(sides.TheirDir, "s.qcow2"), Path.Combine(sides.MyDir, "s.qcow2"));
    }

    public static TheoryData<string> Scripts => new()
    {
        "snapshot -c s1 s.qcow2 | io write -P 2 0 4k | snapshot -a s1 s.qcow2 | snapshot -d s1 s.qcow2",
        "snapshot -c s1 s.qcow2 | io write -P 2 0 4k | snapshot -c s1 s.qcow2 | io write -P 3 64k 64k | snapshot -c s2 s.qcow2 | snapshot -l s.qcow2"
            + " | snapshot -a 1 s.qcow2 | snapshot -a s2 s.qcow2 | snapshot -d s1 s.qcow2 | snapshot -d s1 s.qcow2 | snapshot -d s2 s.qcow2",
        "io write -c -P 7 128k 64k | io write -z 192k 64k | snapshot -c a s.qcow2 | io write -P 8 128k 4k | io discard 192k 64k"
            + " | snapshot -c b s.qcow2 | snapshot -a a s.qcow2 | snapshot -d b s.qcow2 | io write -P 9 0 1M | snapshot -a a s.qcow2 | snapshot -d a s.qcow2",
        "snapshot -a nope s.qcow2 | snapshot -d nope s.qcow2 | snapshot -c x s.qcow2 | snapshot -d 1 s.qcow2 | snapshot -c  s.qcow2",
        "snapshot -c x -U s.qcow2 | snapshot -q -c q s.qcow2 | snapshot -a q -d q s.qcow2",
    };

    [Theory]
    [MemberData(nameof(Scripts))]
    public void Snapshots_change_the_image_as_qemu_img_does(string script)
    {
        using var sides = new SideBySide(dir =>
        {
            Qemu.Ok(SideBySide.RunIn(dir, "qemu-img", ["create", "-q", "-f", "qcow2", "s.qcow2", "1M"]));
            Qemu.Ok(SideBySide.RunIn(dir, "qemu-io", ["-c", "write -P 1 0 64k", "-c", "write -P 5 512k 128k", "s.qcow2"]));
        });
        foreach (var step in script.Split(" | "))
        {
            string[] words = step.StartsWith("io ", StringComparison.Ordinal)
                ? ["io", step[3..]]
                : step.Split(' ');
            Step(sides, words);
        }
    }

    [Theory]
    [InlineData("-c x")]
    [InlineData("-a x")]
    [InlineData("-d x")]
    public void Snapshots_of_a_raw_image_are_refused_as_qemu_img_refuses_them(string action)
    {
        using var sides = new SideBySide(dir => Qemu.Ok(SideBySide.RunIn(dir, "qemu-img", ["create", "-q", "-f", "raw", "r.img", "1M"])));
        sides.Same(["snapshot", .. action.Split(' '), "r.img"]);
    }
    /// <summary>
    /// A snapshot a VM saved without icount stores icount -1 (iotest 286 uses savevm): qemu-img
    /// prints no icount in the list and leaves it out of the JSON; vdisk must too.
    /// </summary>
    [Fact]
    public void A_snapshot_without_icount_lists_as_qemu_img_lists_it()
    {
        using var dir = new TempDir();
        string img = dir.File("s.qcow2");
        Qemu.Ok(Qemu.Img("create", "-q", "-f", "qcow2", img, "64M"));
        Qemu.Ok(Qemu.Img("snapshot", "-c", "vm", img));
        using (var f = new FileStream(img, FileMode.Open, FileAccess.ReadWrite))
        {
            var field = new byte[8];
            f.Position = 64;
            f.ReadExactly(field);
            long table = (long)System.Buffers.Binary.BinaryPrimitives.ReadUInt64BigEndian(field);
            // Entry: 40 fixed bytes, then extra data whose third field (offset 16) is the icount.
            f.Position = table + 40 + 16;
            f.Write([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        }
        foreach (var args in new[] { new[] { "snapshot", "-l", img }, ["info", "--output=json", img] })
        {
            var q = Qemu.Ok(Qemu.Img(args));
            var v = Qemu.Ok(Qemu.Vdisk(args));
            Assert.Equal(q.Stdout, v.Stdout);
        }
    }

    /// <summary>
    /// iotest 217: freeing the clusters of a deleted snapshot fails (blkdebug's cluster_free
    /// event). qemu-img reports the failed free and the failed refcount update, the snapshot is gone
    /// and its clusters leak; check -r leaks then repairs the leaks and, as the counts are then
    /// right, the COPIED flags too.
    /// </summary>
    [Fact]
    public void A_snapshot_delete_whose_frees_fail_leaks_the_clusters_as_qemu_img_does()
    {
        using var sides = new SideBySide(dir =>
        {
            Qemu.Ok(SideBySide.RunIn(dir, "qemu-img", ["create", "-q", "-f", "qcow2", "s.qcow2", "64M"]));
            Qemu.Ok(SideBySide.RunIn(dir, "qemu-io", ["-c", "write 0 64k", "s.qcow2"]));
            Qemu.Ok(SideBySide.RunIn(dir, "qemu-img", ["snapshot", "-c", "foo", "s.qcow2"]));
            File.WriteAllText(Path.Combine(dir, "blkdebug.conf"), "[inject-error]\nevent = \"cluster_free\"\nerrno = \"5\"\n");
        });
        sides.Same("snapshot", "-d", "foo", "blkdebug:blkdebug.conf:s.qcow2");
        foreach (var args in new[] { new[] { "snapshot", "-l", "s.qcow2" }, ["check", "s.qcow2"] })
        {
            var theirs = SideBySide.RunIn(sides.TheirDir, "qemu-img", args);
            var mine = SideBySide.RunIn(sides.MyDir, "qemu-img", args);
            Assert.Equal((theirs.ExitCode, theirs.Stdout, theirs.Stderr), (mine.ExitCode, mine.Stdout, mine.Stderr));
        }
        sides.Same("check", "-r", "leaks", "s.qcow2");
        Qemu.Ok(SideBySide.RunIn(sides.MyDir, "qemu-img", ["check", "s.qcow2"]));
    }
}
