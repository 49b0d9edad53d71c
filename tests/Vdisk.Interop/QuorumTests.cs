using Vdisk.Interop.Support;
using Xunit;
using static Vdisk.Interop.Vmdk.VmdkSideBySide;

namespace Vdisk.Interop;

/// <summary>
/// quorum (iotests 081 and 312's uses): three raw children behind a vote. qemu-io and vdisk run
/// the same scripts on twin sets of files and must print the same and leave the same bytes:
/// writes reach every child, an outvoted child is outvoted (and rewritten under
/// rewrite-corrupted), a broken quorum fails the read, blkverify mode ends the process at the
/// first difference, fifo reads the first child that answers, write errors count against the
/// threshold; refusals of bad options, map, and the lock bytes on every child are QEMU's.
/// </summary>
public class QuorumTests
{
    private const string Size = "1M";

    private sealed class Files : IDisposable
    {
        private readonly TempDir _dir = new();
        public string Dir => _dir.Path;
        public string Child(int i) => _dir.File($"{i}.raw");

        public Files()
        {
            for (int i = 1; i <= 3; i++) Assert.Equal(0, Programs.Run("qemu-img", "create", "-q", "-f", "raw", Child(i), Size).ExitCode);
        }

        public void Fill(int i, string pattern) =>
            Assert.Equal(0, Programs.Run("qemu-io", "-f", "raw", Child(i), "-c", $"write -P {pattern} 0 {Size}").ExitCode);

        public void Dispose() => _dir.Dispose();
    }

    /// <summary>The image-opts of a quorum over children 1..count (raw over file), then <paramref name="extra"/>.</summary>
    private static string Quorum(Files f, int threshold, string extra = "", int count = 3)
    {
        var o = $"driver=raw,file.driver=quorum,file.vote-threshold={threshold}";
        for (int i = 0; i < count; i++) o += $",file.children.{i}.driver=raw,file.children.{i}.file.filename={f.Child(i + 1)}";
        return o + extra;
    }

    private static void SameOnTwins(Action<Files> prepare, Func<Files, string> options, params string[] script)
    {
        using var theirs = new Files();
        using var mine = new Files();
        prepare(theirs);
        prepare(mine);
        string[] Args(Files f) => ["-c", $"open -o {options(f)}", .. script.SelectMany(c => new[] { "-c", c })];
        var q = Programs.Run("qemu-io", Args(theirs));
        var v = Programs.Run(Programs.Vdisk, ["io", .. Args(mine)]);
        Assert.Equal(Seen(q).Replace(theirs.Dir, "DIR"), Seen(v).Replace(mine.Dir, "DIR"));
        for (int i = 1; i <= 3; i++) Assert.True(File.ReadAllBytes(theirs.Child(i)).AsSpan().SequenceEqual(File.ReadAllBytes(mine.Child(i))), $"child {i} differs");
    }

    private static void Nothing(Files f) { }

    private static void OneCorrupted(Files f)
    {
        for (int i = 1; i <= 3; i++) f.Fill(i, "0x32");
        f.Fill(2, "0x42");
    }

    [Fact]
    public void Writes_reach_every_child() =>
        SameOnTwins(Nothing, f => Quorum(f, 2), "write -P 0x32 0 1M", "read -P 0x32 0 1M", "write -z 64k 64k", "read -P 0 64k 64k", "aio_write -P 7 512k 4k", "aio_flush", "flush");

    [Fact]
    public void An_outvoted_child_is_outvoted_and_left_as_it_is() =>
        SameOnTwins(OneCorrupted, f => Quorum(f, 2), "read -P 0x32 0 1M", "read -P 0x32 1000 3000");

    [Fact]
    public void Rewrite_corrupted_writes_the_winning_version_back() =>
        SameOnTwins(OneCorrupted, f => Quorum(f, 2, ",file.rewrite-corrupted=on"), "read -P 0x32 0 64k");

    [Fact]
    public void Without_a_version_reaching_the_threshold_the_read_fails() =>
        SameOnTwins(f => { f.Fill(1, "0x1"); f.Fill(2, "0x2"); f.Fill(3, "0x3"); }, f => Quorum(f, 2), "read -P 0x32 0 4k", "read 0 4k");

    [Fact]
    public void Two_of_three_equal_versions_win_under_a_threshold_of_one_and_a_tie_goes_to_the_later_version() =>
        SameOnTwins(f => { f.Fill(1, "0x1"); f.Fill(2, "0x2"); }, f => Quorum(f, 1, count: 2), "read -v -q 0 32");

    [Fact]
    public void Blkverify_mode_ends_the_process_at_the_first_difference() =>
        SameOnTwins(f => Assert.Equal(0, Programs.Run("qemu-io", "-f", "raw", f.Child(2), "-c", "write -P 9 70000 10").ExitCode),
            f => Quorum(f, 2, ",file.blkverify=on", count: 2), "read 0 4k", "read 64k 64k", "read 0 4k");

    [Fact]
    public void Fifo_reads_the_first_child_that_answers() =>
        SameOnTwins(OneCorrupted, f => Quorum(f, 1, ",file.read-pattern=fifo")
            .Replace($"file.children.0.file.filename={f.Child(1)}", $"file.children.0.file.driver=blkdebug,file.children.0.file.inject-error.0.event=none,file.children.0.file.image.filename={f.Child(1)}"),
            "read -v -q 0 16");

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    public void Failed_child_writes_count_against_the_threshold(int threshold) =>
        SameOnTwins(Nothing, f => Quorum(f, threshold)
            .Replace($"file.children.1.file.filename={f.Child(2)}", $"file.children.1.file.driver=blkdebug,file.children.1.file.inject-error.0.event=pwritev,file.children.1.file.inject-error.0.errno=28,file.children.1.file.image.filename={f.Child(2)}"),
            "write -P 0x5 0 64k", "read -P 0x5 0 64k");

    public static TheoryData<string> BadOptions => new()
    {
        "vote-threshold=0", "vote-threshold=4", "vote-threshold=x", "read-pattern=random", "blkverify=on", "foo=1",
    };

    [Theory]
    [MemberData(nameof(BadOptions))]
    public void Bad_options_are_refused_with_qemus_message(string option) =>
        SameOnTwins(Nothing, f => Quorum(f, 2).Replace("file.vote-threshold=2", "file." + option + (option.StartsWith("vote-threshold", StringComparison.Ordinal) ? "" : ",file.vote-threshold=2")), "read 0 512");

    [Fact]
    public void Bad_child_arrays_are_refused_with_qemus_message()
    {
        SameOnTwins(Nothing, _ => "driver=raw,file.driver=quorum,file.vote-threshold=1", "read 0 512");
        SameOnTwins(Nothing, f => $"driver=raw,file.driver=quorum,file.vote-threshold=1,file.children.0.file.filename={f.Child(1)},file.children.2.file.filename={f.Child(2)}", "read 0 512");
    }

    [Fact]
    public void Map_is_qemus()
    {
        using var f = new Files();
        Assert.Equal(0, Programs.Run("qemu-io", "-c", $"open -o {Quorum(f, 2)}", "-c", "write -P 1 64k 64k").ExitCode);
        Assert.Equal(0, Programs.Run("qemu-io", "-f", "raw", f.Child(3), "-c", "write -P 1 512k 4k").ExitCode);
        AssertSame("map", "--output=json", "--image-opts", Quorum(f, 2));
        AssertSame("map", "--image-opts", Quorum(f, 2));
    }

    [Theory]
    [InlineData("quorum")]
    [InlineData("blkverify")]
    public void A_relative_backing_name_under_a_node_without_a_directory_cannot_be_resolved(string driver)
    {
        // iotest 110's last case: bdrv_dirname fails for quorum and blkverify, so info shows no
        // actual path and an open that needs the backing file fails with bdrv_dirname's error.
        using var dir = new TempDir();
        string top = dir.File("t.top"), copy = dir.File("t.copy");
        Assert.Equal(0, Programs.Run("qemu-img", "create", "-q", "-f", "qcow2", dir.File("t.base"), "1M").ExitCode);
        Assert.Equal(0, Programs.Run("qemu-img", "create", "-q", "-f", "qcow2", "-b", "t.base", "-F", "qcow2", top, "1M").ExitCode);
        File.Copy(top, copy);
        string file = driver == "quorum"
            ? $"{{\"driver\":\"quorum\",\"vote-threshold\":1,\"children\":[{{\"driver\":\"file\",\"filename\":\"{top}\"}},{{\"driver\":\"file\",\"filename\":\"{copy}\"}}]}}"
            : $"{{\"driver\":\"blkverify\",\"raw\":{{\"driver\":\"file\",\"filename\":\"{copy}\"}},\"test\":{{\"driver\":\"file\",\"filename\":\"{top}\"}}}}";
        string json = $"json:{{\"driver\":\"qcow2\",\"file\":{file}}}";
        AssertSame("io", json, "-c", "read -q 0 512");
        var q = Programs.Run("qemu-img", "info", json);
        var v = Programs.Run(Programs.Vdisk, "info", json);
        Assert.Contains("backing file: t.base (cannot determine actual path)\n", v.Stdout);
        Assert.Equal(q.Stdout.Split('\n').Where(l => l.StartsWith("backing", StringComparison.Ordinal)), v.Stdout.Split('\n').Where(l => l.StartsWith("backing", StringComparison.Ordinal)));
    }

    [Theory]
    [InlineData("")]
    [InlineData(",file.rewrite-corrupted=on")]
    public void A_holder_takes_qemus_bytes_on_every_child(string extra)
    {
        using var f = new Files();
        string[] args = ["--image-opts", Quorum(f, 2, extra), "-c", "sleep 60000"];
        string Bytes(Holder h) => string.Join(" / ", Enumerable.Range(1, 3).Select(i => LockBytesHeld.Describe(LockBytesHeld.Read(h.Pid, f.Child(i)))));
        string qemu, vdisk;
        using (var q = Holder.Start(f.Child(3), "qemu-io", args)) qemu = Bytes(q);
        using (var v = Holder.Start(f.Child(3), Programs.Vdisk, ["io", .. args])) vdisk = Bytes(v);
        Assert.Equal(qemu, vdisk);
        // Read-only: rewrite-corrupted needs write on the children, which a read-only node refuses.
        AssertSame("io", "-r", "--image-opts", Quorum(f, 2, extra), "-c", "read -q 0 512");
    }
}
