using System.Diagnostics;
using Vdisk.Interop.Support;
using Xunit;

namespace Vdisk.Interop;

/// <summary>
/// Out-of-range and unusual arguments to the qemu-io commands vdisk io implements: the same
/// words, exit status and image content as qemu-io 7.2, and never a stack trace.
/// </summary>
public partial class ToolOutputTests
{
    [Theory]
    // sleep parses its number like strtol(..., 0): octal after a leading 0, hex after 0x, a sign.
    [InlineData("sleep 08")]
    [InlineData("sleep 0x")]
    [InlineData("sleep +5")]
    [InlineData("sleep 0x10")]
    // Sleeps too long for 64-bit nanoseconds wrap qemu-io's timer deadline into the past.
    [InlineData("sleep 99999999999999999999")]
    [InlineData("sleep 9300000000000")]
    [InlineData("write -P 08 0 1")]
    [InlineData("write -P +5 0 1")]
    [InlineData("write -P -0 0 1")]
    [InlineData("write -P 99999999999999999999 0 1")]
    [InlineData("write -z 0 4G")]
    [InlineData("write -z -n 0 4G")]
    [InlineData("discard 0 4G")]
    [InlineData("discard 0 9223372036854775807")]
    [InlineData("read 0 8E")]
    [InlineData("read 9223372036854775807 512")]
    [InlineData("read -s 0 0 abc")]
    [InlineData("read -P 0 -s 9223372036854775807 0 512")]
    [InlineData("read -P 0 -l 9223372036854775807 0 512")]
    [InlineData("truncate 1 2")]
    [InlineData("truncate -m bogus 2M")]
    [InlineData("truncate -m metadata 2M")]
    [InlineData("truncate 8E")]
    [InlineData("write -c -z 0 512")]
    [InlineData("write -c 0 1")]
    [InlineData("write -b 1 512")]
    [InlineData("write -b -z 0 512")]
    [InlineData("write -b 0 512")]
    [InlineData("write -f -b 0 512")]
    [InlineData("read -b 0 1")]
    [InlineData("read -b 0 512")]
    [InlineData("read -a 0 512")]
    [InlineData("read -p 0 512")]
    [InlineData("write -p 0 512")]
    [InlineData("quit 1")]
    [InlineData("r -x 0 1")]
    [InlineData("help l")]
    // A word that is no command: qemu-io names it, goes on with the next command, exits 1.
    [InlineData("frob")]
    [InlineData("frob 0 512")]
    [InlineData("READ 0 512")]
    public void OutOfRangeArguments_AreAnsweredAsQemuIoAnswers(string command)
    {
        using var dir = new TempDir();
        var a = dir.RawImage("a.raw");
        var b = dir.RawImage("b.raw");
        string[] script = ["-c", command, "-c", "length"];
        var q = Programs.Run("qemu-io", ["-f", "raw", a, .. script]);
        var v = Programs.Run(Programs.Vdisk, ["io", "-f", "raw", b, .. script]);
        Assert.Equal(q.ExitCode, v.ExitCode);
        Assert.Equal(Normalize(q.Stdout), Normalize(v.Stdout));
        Assert.Equal(q.Stderr.Replace("qemu-io: ", "vdisk: "), v.Stderr);
        Assert.Equal(System.IO.File.ReadAllBytes(a), System.IO.File.ReadAllBytes(b));
    }

    [Fact]
    public void WriteFromFile_RepeatsAShortFileAndNamesAMissingOrEmptyOne()
    {
        using var dir = new TempDir();
        var a = dir.RawImage("a.raw");
        var b = dir.RawImage("b.raw");
        var pattern = dir.File("pattern");
        System.IO.File.WriteAllText(pattern, "abc");
        var empty = dir.File("empty");
        System.IO.File.WriteAllText(empty, "");
        string[] script = ["-c", $"write -s {pattern} 0 8", "-c", "read -v 0 16", "-c", $"write -s {dir.File("missing")} 0 8", "-c", $"write -s {empty} 0 8", "-c", $"write -s {dir.Path} 0 8"];
        var q = Programs.Run("qemu-io", ["-f", "raw", a, .. script]);
        var v = Programs.Run(Programs.Vdisk, ["io", "-f", "raw", b, .. script]);
        Assert.Equal(q.ExitCode, v.ExitCode);
        Assert.Equal(Normalize(q.Stdout), Normalize(v.Stdout));
        Assert.Contains("61 62 63 61 62 63 61 62", v.Stdout);
        Assert.Equal(q.Stderr, v.Stderr);
        Assert.Equal(System.IO.File.ReadAllBytes(a), System.IO.File.ReadAllBytes(b));
    }

    [Theory]
    [InlineData("drop-cache=maybe")]
    [InlineData("drop-cache=off")]
    [InlineData("drop-cache=on")]
    public void FileOptions_AreCheckedLikeQemuIo(string option)
    {
        using var dir = new TempDir();
        var img = dir.RawImage();
        string opts = $"driver=raw,file.driver=file,file.filename={img},file.{option}";
        var q = Programs.Run("qemu-io", "--image-opts", opts, "-c", "length");
        var v = Programs.Run(Programs.Vdisk, "io", "--image-opts", opts, "-c", "length");
        Assert.Equal(q.ExitCode, v.ExitCode);
        Assert.Equal(q.Stdout, v.Stdout);
        Assert.Equal(q.Stderr.Replace("qemu-io: ", "vdisk: "), v.Stderr);
    }

    [Fact]
    public void PatternRangeBeyondLong_IsOutOfRange()
    {
        // qemu-io's offset + length wraps and it aborts allocating 2^63 bytes; vdisk says why it refuses.
        using var dir = new TempDir();
        var img = dir.RawImage();
        var v = Programs.Run(Programs.Vdisk, "io", "-f", "raw", img, "-c", "read -P 0 -s 1 -l 9223372036854775807 0 512");
        Assert.Equal(1, v.ExitCode);
        Assert.Equal("pattern verification range exceeds end of read data\n", v.Stdout);
        Assert.Equal("", v.Stderr);
    }

    [Theory]
    [InlineData("-t", "bogus")]
    [InlineData("-d", "bogus")]
    public void BadCacheOrDiscardMode_IsRefusedLikeQemuIo(string option, string value)
    {
        using var dir = new TempDir();
        var img = dir.RawImage();
        var q = Programs.Run("qemu-io", option, value, "-f", "raw", img, "-c", "length");
        var v = Programs.Run(Programs.Vdisk, "io", option, value, "-f", "raw", img, "-c", "length");
        Assert.Equal(1, v.ExitCode);
        Assert.Equal(q.ExitCode, v.ExitCode);
        Assert.Equal(q.Stdout, v.Stdout);
        Assert.Equal(q.Stderr.Replace("qemu-io: ", "vdisk: "), v.Stderr);
        var qo = Programs.Run("qemu-io", "-c", $"open {option} {value} -o driver=raw {img}");
        var vo = Programs.Run(Programs.Vdisk, "io", "-c", $"open {option} {value} -o driver=raw {img}");
        Assert.Equal(qo.ExitCode, vo.ExitCode);
        Assert.Equal(qo.Stderr.Replace("qemu-io: ", "vdisk: "), vo.Stderr);
    }

    /// <summary>
    /// With --image-opts on the command line, the open command reads its operand as options
    /// (qemu-io's open_f; iotest 033 opens so), with open's own flags before it (-U: QEMU's refusal).
    /// </summary>
    [Fact]
    public void OpenCommand_UnderImageOpts_ReadsItsOperandAsOptions()
    {
        using var dir = new TempDir();
        var img = dir.RawImage();
        foreach (var extra in new[] { "", " -U" })
        {
            string[] args = ["--image-opts", "-c", $"open{extra} driver=raw,file.filename={img}", "-c", "write -P 0xa 512 1k", "-c", "read -P 0xa 512 1k"];
            var q = Programs.Run("qemu-io", args);
            var v = Programs.Run(Programs.Vdisk, ["io", .. args]);
            Assert.True(q.ExitCode == v.ExitCode && q.Stderr.Replace("qemu-io: ", "vdisk: ") == v.Stderr, $"QEMU: {q}\nvdisk: {v}");
            Assert.Equal(q.Stdout.Split('\n').Where(l => l.StartsWith("wrote", StringComparison.Ordinal) || l.StartsWith("read", StringComparison.Ordinal)),
                v.Stdout.Split('\n').Where(l => l.StartsWith("wrote", StringComparison.Ordinal) || l.StartsWith("read", StringComparison.Ordinal)));
            if (extra.Length == 0) Assert.Contains("read 1024/1024 bytes at offset 512", v.Stdout);
        }
    }

    /// <summary>qemu-io opens write-through: each write is flushed; writeback flushes once on close; unsafe never.</summary>
    [Theory]
    [InlineData(new string[0], "write -q 0 512")]
    [InlineData(new[] { "-t", "writeback" }, "write -q 0 512")]
    [InlineData(new[] { "-t", "unsafe" }, "write -q 0 512")]
    [InlineData(new string[0], "write -q -z 0 512")]
    [InlineData(new string[0], "discard -q 0 512")]
    [InlineData(new string[0], "read -q 0 512")]
    public void CacheMode_FlushesWhenQemuIoFlushes(string[] options, string command)
    {
        using var dir = new TempDir();
        var img = dir.RawImage();
        string[] args = [.. options, "-f", "raw", img, "-c", command, "-c", command];
        Assert.Equal(Fdatasyncs("qemu-io", args), Fdatasyncs(Programs.Vdisk, ["io", .. args]));
    }

    private static int Fdatasyncs(string program, string[] args)
    {
        var (r, calls) = Strace.Run("fdatasync,fsync", program, args);
        Assert.Equal(0, r.ExitCode);
        return calls.Count(l => l.Contains("sync("));
    }

    /// <summary>
    /// A sleep of 2^32-1 ms (49.7 days) is longer than one .NET timer can wait; it must sleep
    /// until a signal ends it, as qemu-io does (which cannot be compared line by line: qemu-io
    /// dies of the signal with its buffered output unwritten).
    /// </summary>
    [Fact]
    public async Task SleepOf49Days_SleepsUntilSignalled()
    {
        using var dir = new TempDir();
        var img = dir.RawImage();
        using var p = Process.Start(Programs.StartInfo(Programs.Vdisk, ["io", "-f", "raw", img, "-c", "length", "-c", "sleep 4294967295"]))!;
        var errors = p.StandardError.ReadToEndAsync();
        // vdisk io flushes its output before sleeping: once the line is out, the sleep has begun.
        Assert.Equal("1 MiB", p.StandardOutput.ReadLine());
        Assert.Equal(0, Programs.Run("kill", "-TERM", p.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)).ExitCode);
        Assert.Equal("", p.StandardOutput.ReadToEnd());
        Assert.True(p.WaitForExit(TimeSpan.FromSeconds(60)), "vdisk io did not end on SIGTERM");
        Assert.Equal("", await errors);
        Assert.Equal(143, p.ExitCode);
    }
}
