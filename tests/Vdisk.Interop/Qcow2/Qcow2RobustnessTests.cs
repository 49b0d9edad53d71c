using System.Globalization;
using Vdisk.Interop.Support;
using Vdisk.TestSupport;
using Xunit;
using Xunit.Abstractions;

namespace Vdisk.Interop.Qcow2;

/// <summary>Differential workloads against qemu-io, SIGKILL crash safety, and bad input.</summary>
public class Qcow2RobustnessTests(ITestOutputHelper output)
{
    private static string Inv(long v) => v.ToString(CultureInfo.InvariantCulture);

    /// <summary>Workload number <paramref name="seed"/>: writes, zero writes and discards inside an image of <paramref name="size"/> bytes, the same on every run.</summary>
    private static List<string> Workload(int seed, long size, int count)
    {
        var data = new DeterministicData($"qcow2 workload {seed}");
        var ops = new List<string>();
        for (int i = 0; i < count; i++)
        {
            long len = data.Next(1, 200) * 512L;
            long off = data.Next(0, (size - len) / 512) * 512;
            switch (data.Next(0, 10))
            {
                case < 6: ops.Add($"write -P 0x{data.Next(1, 255):x2} {Inv(off)} {Inv(len)}"); break;
                case < 8: ops.Add($"write -z {Inv(off)} {Inv(len)}"); break;
                case 8: ops.Add($"write -z -u {Inv(off)} {Inv(len)}"); break;
                default: ops.Add($"discard {Inv(off)} {Inv(len)}"); break;
            }
        }
        ops.Add("flush");
        return ops;
    }

    [Theory]
    [InlineData(1, "65536", "1.1", false)]
    [InlineData(2, "4096", "1.1", true)]
    [InlineData(3, "512", "1.1", false)]
    [InlineData(4, "65536", "0.10", true)]
    [InlineData(5, "2M", "1.1", true)]
    public void Same_random_workload_gives_the_same_guest_content_as_qemu_io(int seed, string clusterSize, string compat, bool withBacking)
    {
        using var dir = new TempDir();
        string mine = dir.File("mine.qcow2"), theirs = dir.File("theirs.qcow2");
        var create = new List<string> { "create", "-q", "-f", "qcow2", "-o", $"cluster_size={clusterSize},compat={compat}" };
        if (withBacking)
        {
            string b = dir.File("base.qcow2");
            Qemu.Ok(Qemu.Img("create", "-q", "-f", "qcow2", b, "4M"));
            Qemu.Ok(Qemu.Io("-c", "write -P 0x5b 0 3M", b));
            create.AddRange(["-b", "base.qcow2", "-F", "qcow2"]);
        }
        Qemu.Ok(Qemu.Img([.. create, mine, "4M"]));
        Qemu.Ok(Qemu.Img([.. create, theirs, "4M"]));
        var ops = Workload(seed, 4 << 20, 150);
        Qemu.Ok(Qemu.Vdisk(["io", .. Qemu.Commands(ops), mine]));
        Qemu.Ok(Qemu.Io([.. Qemu.Commands(ops), theirs]));
        Qemu.AssertClean(mine);
        Qemu.AssertClean(theirs);
        Qemu.AssertIdentical(mine, theirs);
    }

    [Fact]
    public void Killing_a_writer_mid_workload_never_corrupts_and_keeps_flushed_data()
    {
        using var dir = new TempDir();
        var killPoints = new DeterministicData("kill points");
        string pristine = dir.File("pristine.qcow2");
        Qemu.Ok(Qemu.Img("create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", pristine, "8M"));
        int leaks = 0;
        for (int run = 0; run < 100; run++)
        {
            string img = dir.File($"crash{run % 4}.qcow2");
            File.Copy(pristine, img, overwrite: true);
            bool lazy = run % 5 == 4;
            if (lazy) Qemu.Ok(Qemu.Img("amend", "-o", "lazy_refcounts=on", img));
            // 7M is written and flushed first; "length" prints "8 MiB" once that flush is done.
            // The trailing sleep means the writer never ends by itself: every run ends in SIGKILL.
            var ops = new List<string> { "write -P 0x5a 7M 64k", "flush", "length" };
            ops.AddRange(Workload(run, 7 << 20, 400));
            ops.Add("sleep 600000");
            // vdisk io flushes its output after each command, so the number of lines printed tells
            // how far it got: kill it somewhere in the first two thirds of the workload's output.
            long killAfterLines = killPoints.Next(3, 500);
            using var writer = ChildProcess.Start(Programs.Vdisk, ["io", .. Qemu.Commands(ops), img]);
            writer.WaitFor((stdout, _) => stdout.Count(c => c == '\n') >= killAfterLines, $"printed {killAfterLines} lines");
            writer.Kill();
            var killed = writer.Result();
            Assert.True(killed.ExitCode == 128 + 9, $"run {run}: {killed}");
            Assert.StartsWith("wrote 65536/65536 bytes at offset 7340032\n", killed.Stdout);
            Assert.Contains("\n8 MiB\n", killed.Stdout);

            if (lazy)
            {
                // Lazy refcounts, as QEMU keeps them, may lag behind the tables after a crash: the
                // dirty bit says so, and the next read-write open (here real qemu-io's) repairs them.
                Assert.True((File.ReadAllBytes(img)[79] & 1) == 1, $"run {run}: the dirty bit is not set");
                Qemu.Ok(Qemu.Io("-c", "read -P 0x5a 7M 64k", img));
                Qemu.AssertClean(img);
            }
            else
            {
                var check = Qemu.Img("check", img);
                Assert.True(check.ExitCode is 0 or 3, $"run {run}: {check}");
                Assert.DoesNotContain("ERROR", check.Stderr);
                if (check.ExitCode == 3)
                {
                    leaks++;
                    Assert.Equal(0, Qemu.Img("check", "-r", "leaks", img).ExitCode);
                    Qemu.AssertClean(img);
                }
            }
            Qemu.Ok(Qemu.Io("-r", "-c", "read -P 0x5a 7M 64k", img));
        }
        output.WriteLine($"{leaks} of 80 killed writers without lazy refcounts left leaked clusters (repaired by check -r leaks)");
    }

    public static TheoryData<string, int, byte[]> Corruptions() => new()
    {
        { "bad magic", 0, [0, 0, 0, 0] },
        { "version 1", 4, [0, 0, 0, 1] },
        { "cluster bits 30", 20, [0, 0, 0, 30] },
        { "cluster bits 8", 20, [0, 0, 0, 8] },
        { "huge l1_size", 36, [0x7f, 0xff, 0xff, 0xff] },
        { "l1 offset unaligned", 47, [0x01] },
        { "refcount table past EOF", 48, [0, 0, 0x10, 0, 0, 0, 0, 0] },
        { "refcount table huge", 56, [0x7f, 0xff, 0xff, 0xff] },
        { "no refcount table", 56, [0, 0, 0, 0] },
        { "unknown incompatible bit", 72, [0x80, 0, 0, 0, 0, 0, 0, 0] },
        { "header_length too big", 100, [0x00, 0x10, 0, 0] },
        { "refcount order 9", 96, [0, 0, 0, 9] },
        { "backing offset past cluster", 8, [0, 0, 0, 0, 0, 0x10, 0, 0] },
        { "snapshot count huge", 60, [0x7f, 0xff, 0xff, 0xff] },
        { "corrupt bit", 79, [0x02] },
    };

    [Theory]
    [MemberData(nameof(Corruptions))]
    public void Mutated_headers_give_one_clear_error_or_open(string name, int offset, byte[] bytes)
    {
        using var dir = new TempDir();
        string img = dir.File("bad.qcow2");
        Qemu.Ok(Qemu.Img("create", "-q", "-f", "qcow2", img, "4M"));
        Qemu.Ok(Qemu.Io("-c", "write -P 0x21 0 128k", img));
        using (var f = new FileStream(img, FileMode.Open, FileAccess.Write)) { f.Position = offset; f.Write(bytes); }
        foreach (var args in new[] { new[] { "info", "-f", "qcow2", img }, ["io", "-f", "qcow2", "-c", "read 0 64k", "-c", "write 0 4k", img], ["check", "-f", "qcow2", img] })
        {
            var r = Programs.Run(Programs.Vdisk, args, new Dictionary<string, string> { ["DOTNET_GCHeapHardLimit"] = "0x20000000" }, TimeSpan.FromSeconds(60));
            Assert.DoesNotContain("Exception", r.Stderr + r.Stdout);
            Assert.DoesNotContain("   at ", r.Stderr);
            Assert.True(r.ExitCode is 0 or 1 or 2 or 3, $"{name}: {r}");
            if (args[0] == "info" && r.ExitCode != 0)
            {
                Assert.StartsWith($"vdisk: Could not open '{img}': ", r.Stderr);
                Assert.Single(r.Stderr.TrimEnd('\n').Split('\n'));
            }
        }
    }

    [Fact]
    public void A_data_cluster_past_the_largest_file_fails_the_write_with_EFBIG_as_qemu_io()
    {
        // An L2 entry pointing at 2^56 - 64 KiB: pwrite there fails with EFBIG, which .NET turns
        // into ArgumentOutOfRangeException; vdisk crashed with it before.
        using var dir = new TempDir();
        string theirs = dir.File("theirs.qcow2"), mine = dir.File("mine.qcow2");
        Qemu.Ok(Qemu.Img("create", "-q", "-f", "qcow2", theirs, "1M"));
        Qemu.Ok(Qemu.Io("-c", "write -P 0x21 0 64k", theirs));
        using (var f = new FileStream(theirs, FileMode.Open, FileAccess.ReadWrite))
        {
            var word = new byte[8];
            long ReadOffset(long at)
            {
                f.Position = at;
                f.ReadExactly(word);
                return (long)(System.Buffers.Binary.BinaryPrimitives.ReadUInt64BigEndian(word) & 0x00ff_ffff_ffff_fe00UL);
            }
            long l2 = ReadOffset(ReadOffset(40));
            System.Buffers.Binary.BinaryPrimitives.WriteUInt64BigEndian(word, (1UL << 63) | 0x00ff_ffff_ffff_0000UL);
            f.Position = l2;
            f.Write(word);
        }
        File.Copy(theirs, mine);
        var q = Qemu.Io("-f", "qcow2", "-c", "write -P 1 0 4k", theirs);
        var v = Programs.Run(Programs.Vdisk, "io", "-f", "qcow2", "-c", "write -P 1 0 4k", mine);
        Assert.True(v.Stdout == "write failed: File too large\n", $"qemu-io: {q}\nvdisk: {v}");
        Assert.Equal((q.ExitCode, q.Stdout, q.Stderr), (v.ExitCode, v.Stdout, v.Stderr));
    }

    [Fact]
    public void Truncated_and_randomly_mutated_images_never_crash_or_hang()
    {
        using var dir = new TempDir();
        string good = dir.File("good.qcow2");
        Qemu.Ok(Qemu.Img("create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", good, "2M"));
        Qemu.Ok(Qemu.Io("-c", "write -P 0x21 0 300k", "-c", "write -z 1M 64k", good));
        var original = File.ReadAllBytes(good);
        var mutations = new DeterministicData("qcow2 mutations");
        for (int i = 0; i < 40; i++)
        {
            var bytes = (byte[])original.Clone();
            if (i % 8 == 0) bytes = bytes[..(int)mutations.Next(1, bytes.Length)];
            else
                for (int k = 0; k < 1 + mutations.Next(0, 6); k++) bytes[mutations.Next(0, Math.Min(bytes.Length, 6 * 4096))] ^= (byte)(1 << (int)mutations.Next(0, 8));
            string img = dir.File($"fuzz{i}.qcow2");
            File.WriteAllBytes(img, bytes);
            var r = Programs.Run(Programs.Vdisk, ["io", "-f", "qcow2", "-c", "read 0 1M", "-c", "write -P 1 64k 8k", "-c", "map", img],
                new Dictionary<string, string> { ["DOTNET_GCHeapHardLimit"] = "0x20000000" }, TimeSpan.FromSeconds(60));
            Assert.DoesNotContain("Exception", r.Stderr + r.Stdout);
            Assert.True(r.ExitCode is 0 or 1, $"fuzz {i}: {r}");
            if (r.Stderr.Contains("can't open device")) Assert.StartsWith($"vdisk: can't open device {img}: ", r.Stderr);
        }
    }

    [Fact]
    public void Backing_chain_loops_are_refused()
    {
        using var dir = new TempDir();
        string a = dir.File("a.qcow2"), b = dir.File("b.qcow2");
        Qemu.Ok(Qemu.Img("create", "-q", "-f", "qcow2", a, "1M"));
        Qemu.Ok(Qemu.Img("create", "-q", "-f", "qcow2", "-b", "a.qcow2", "-F", "qcow2", b));
        Qemu.Ok(Qemu.Img("rebase", "-u", "-b", "b.qcow2", "-F", "qcow2", a));
        var r = Qemu.Vdisk("io", "-r", "-c", "read 0 512", b);
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("creates an infinite loop", r.Stderr);
        var info = Qemu.Vdisk("info", "--backing-chain", b);
        Assert.Equal(1, info.ExitCode);
        Assert.EndsWith("creates an infinite loop.\n", info.Stderr);
    }
}
