using Vdisk.Interop.Support;
using Xunit;
using static Vdisk.Interop.Vmdk.VmdkSideBySide;

namespace Vdisk.Interop;

/// <summary>
/// blkverify (iotest 071's uses): a qcow2 image under test beside a raw reference copy. Reads and
/// writes that agree pass through; the first read whose bytes differ ends the process with exit
/// status 1 and QEMU's line, in every way of naming the node; info, map and the lock bytes are
/// QEMU's. Each case runs qemu-io or qemu-img and vdisk on copies of the same files.
/// </summary>
public class BlkverifyTests
{
    private sealed class Pair : IDisposable
    {
        private readonly TempDir _dir = new();
        public string Raw { get; }
        public string Test { get; }

        public Pair(string name)
        {
            Raw = _dir.File(name + ".base");
            Test = _dir.File(name + ".qcow2");
            Assert.Equal(0, Programs.Run("qemu-img", "create", "-q", "-f", "raw", Raw, "4M").ExitCode);
            Assert.Equal(0, Programs.Run("qemu-img", "create", "-q", "-f", "qcow2", Test, "4M").ExitCode);
        }

        public void Dispose() => _dir.Dispose();
    }

    /// <summary>The ways 071 names the node, for a pair of files.</summary>
    private static string[] Open(string how, Pair p) => how switch
    {
        "filename" => ["-c", $"open -o driver=raw,file.driver=blkverify,file.raw.filename={p.Raw} {p.Test}"],
        "blockref" => ["-c", $"open -o driver=raw,file.driver=blkverify,file.raw.filename={p.Raw},file.test.driver=qcow2,file.test.file.filename={p.Test}"],
        "prefix" => ["-f", "raw", $"blkverify:{p.Raw}:{p.Test}"],
        _ => throw new ArgumentOutOfRangeException(nameof(how)),
    };

    /// <summary>qemu-io and vdisk io, each on its own pair of files, with the same script.</summary>
    private static void SameOnTwins(string how, Action<Pair>? prepare, params string[] script)
    {
        using var theirs = new Pair("q");
        using var mine = new Pair("v");
        prepare?.Invoke(theirs);
        prepare?.Invoke(mine);
        var q = Programs.Run("qemu-io", [.. Open(how, theirs), .. script.SelectMany(c => new[] { "-c", c })]);
        var v = Programs.Run(Programs.Vdisk, ["io", .. Open(how, mine), .. script.SelectMany(c => new[] { "-c", c })]);
        Assert.Equal(Seen(q).Replace(theirs.Raw, "RAW").Replace(theirs.Test, "TEST"), Seen(v).Replace(mine.Raw, "RAW").Replace(mine.Test, "TEST"));
        Assert.Equal(File.ReadAllBytes(theirs.Raw), File.ReadAllBytes(mine.Raw));
        Assert.Equal(0, Programs.Run("qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", theirs.Test, mine.Test).ExitCode);
    }

    [Theory]
    [InlineData("filename")]
    [InlineData("blockref")]
    [InlineData("prefix")]
    public void Agreeing_reads_and_writes_reach_both_images(string how) =>
        SameOnTwins(how, null, "read 0 512", "write -P 42 0x38000 512", "read -P 42 0x38000 512", "aio_write -P 7 1M 64k", "aio_flush", "read -P 7 1M 64k");

    [Theory]
    [InlineData("filename")]
    [InlineData("blockref")]
    [InlineData("prefix")]
    public void A_read_that_differs_ends_the_process_with_qemus_line(string how)
    {
        SameOnTwins(how, p => Assert.Equal(0, Programs.Run("qemu-io", "-f", "qcow2", p.Test, "-c", "write -P 42 1000 100").ExitCode),
            "write -P 5 64k 512", "read -P 5 64k 512", "read 0 4k", "read 0 512");
    }

    [Fact]
    public void Info_and_map_are_qemus()
    {
        using var p = new Pair("x");
        Assert.Equal(0, Programs.Run("qemu-io", $"blkverify:{p.Raw}:{p.Test}", "-f", "raw", "-c", "write -P 1 0 64k").ExitCode);
        string node = $"blkverify:{p.Raw}:{p.Test}";
        AssertSame("info", node);
        AssertSame("map", node);
        AssertSame("map", "--output=json", node);
        AssertSame("io", "-r", "-f", "raw", node, "-c", "info", "-c", "read -P 1 0 64k");
    }

    [Fact]
    public void A_malformed_filename_is_refused_as_qemu_refuses_it()
    {
        using var p = new Pair("m");
        AssertSame("io", "-f", "raw", $"blkverify:{p.Raw}", "-c", "read 0 512");
        AssertSame("info", $"blkverify:{p.Raw}");
    }

    [Fact]
    public void A_holder_takes_qemus_bytes_on_both_files()
    {
        using var p = new Pair("h");
        string[] args = ["-f", "raw", $"blkverify:{p.Raw}:{p.Test}", "-c", "sleep 60000"];
        string Bytes(Holder h) => $"raw {LockBytesHeld.Describe(LockBytesHeld.Read(h.Pid, p.Raw))} test {LockBytesHeld.Describe(LockBytesHeld.Read(h.Pid, p.Test))}";
        string qemu, vdisk;
        using (var q = Holder.Start(p.Test, "qemu-io", args)) qemu = Bytes(q);
        using (var v = Holder.Start(p.Test, Programs.Vdisk, ["io", .. args])) vdisk = Bytes(v);
        Assert.Equal(qemu, vdisk);
    }
}
