using System.Text.RegularExpressions;
using Vdisk.Interop.Support;
using Xunit;

namespace Vdisk.Interop;

/// <summary>
/// qemu-io's vectored, asynchronous and bookkeeping commands (readv, writev, aio_read, aio_write,
/// aio_flush, alloc, reopen, sigraise, abort): the same output, exit status and image content as
/// qemu-io 7.2, side by side. Each aio request is followed by aio_flush: qemu-io's thread pool
/// may otherwise report two requests in either order.
/// </summary>
public partial class ToolOutputTests
{
    [Theory]
    [InlineData("raw", "writev -P 3 0 3 4 | readv -v 0 7 | readv -P 3 0 3 4 | readv -P 4 0 7 | readv -C 0 512 512 | readv -q 0 1")]
    [InlineData("raw", "writev 0 0 | readv 0 0 | writev -f -P 7 512 512 1k | readv -P 7 512 1536 | writev -q 4k 1")]
    [InlineData("raw", "readv 0 2000M 2000M | readv 0 3G | readv x 1 | readv 0 1 y | readv 0 -1 | readv -x 0 1 | readv 0 | writev -z 0 1 | writev -P 300 0 1")]
    [InlineData("qcow2", "writev -P 9 64k 4k 60k | readv -P 9 64k 64k | readv -P 0 0 64k | map")]
    [InlineData("raw", "aio_write -P 5 0 512 | aio_flush | aio_read -P 5 0 512 | aio_flush | aio_read -P 6 0 512 | aio_flush | aio_read -v 0 16 | aio_flush")]
    [InlineData("qcow2", "aio_write -P 5 0 4k 4k | aio_flush | aio_write -z 4k 4k | aio_flush | aio_write -z -u 64k 64k | aio_flush | aio_read -P 5 0 4k | aio_flush | aio_read -P 0 4k 4k | aio_flush | map")]
    [InlineData("raw", "aio_write -u 0 512 | aio_write -z 0 512 512 | aio_read -i 0 1 | aio_write -i 0 1 | aio_read 0 4G | aio_write -q 0 512 | length | aio_flush")]
    [InlineData("raw", "aio_write -P 1 0 512 | length | info | read -P 1 0 512")]
    [InlineData("raw", "aio_write -P 2 0 512 | help aio_flush")]
    [InlineData("qcow2", "alloc 0 | write -P 1 64k 64k | alloc 0 1M | alloc 64k | a 64k 128k | alloc 1M 512 | alloc 2M | alloc 1M-512 4k | alloc x | alloc 0 y")]
    [InlineData("raw", "alloc 0 | alloc 0 1M | alloc 512k 1M | alloc 1M")]
    [InlineData("raw", "reopen -r | write 0 512 | discard 0 512 | read -q 0 512 | reopen -w | write -P 3 0 512 | reopen | read -P 3 0 512")]
    [InlineData("qcow2", "reopen -r | write -z 0 512 | truncate 2M | reopen -o read-only=off | write -P 4 0 512 | reopen -o read-only=on | write 0 512")]
    [InlineData("raw", "write -q 0 512 | reopen -o read-only=on | write -q -P 1 0 512 | reopen -r | reopen -o read-only=off | write -P 2 0 512")]
    [InlineData("raw", "reopen -r -w | reopen -c bogus | reopen -o read-only=on -r | reopen x | reopen -o foo=bar | reopen -o read-only=foo | reopen -o cache.direct=baz | reopen -c none -o cache.no-flush=on | reopen -x")]
    [InlineData("raw", "reopen -c writeback | write -q 0 512 | reopen -c writethrough | write -q 512 512 | reopen -c unsafe | write -q 1k 512 | reopen -o cache.no-flush=off")]
    [InlineData("qcow2", "reopen -o node-name=foo | reopen -o file.node-name=foo | reopen -o driver=raw | reopen -o file.driver=qcow2 | reopen -o driver=qcow2 | reopen -o file.driver=file | reopen -o auto-read-only=qux | reopen -o auto-read-only=on | reopen -o file.bogus=1 | reopen -o file.cache.direct=x | reopen -o offset=512 | write -P 1 0 512 | read -P 1 0 512")]
    [InlineData("raw", "reopen -o offset=512,size=1k | length | write -P 5 0 1k | write -P 5 1023 1 | write 1024 1 | reopen -o size=x | reopen -o offset=2M | reopen -o driver=raw,size=2k | length | reopen -o file.offset=1")]
    [InlineData("raw", "sigraise 99 | sigraise x | sigraise 0 | sigraise 10 | sigraise 65 | length")]
    [InlineData("raw", "length | sigraise 15 | length")]
    [InlineData("raw", "length | sigraise 9 | length")]
    [InlineData("raw", "write -q -P 8 0 512 | abort | length")]
    public void VectoredAsyncAndReopenCommands_AnswerAsQemuIoAnswers(string format, string script)
    {
        using var dir = new TempDir();
        string a = dir.File("a." + format), b = dir.File("b." + format);
        foreach (var image in new[] { a, b })
            Assert.Equal(0, Programs.Run("qemu-img", "create", "-q", "-f", format, image, "1M").ExitCode);
        string[] commands = [.. script.Split(" | ").SelectMany(c => new[] { "-c", c })];
        // The suite's own invocation: write-back cache and thread-pool AIO on every call.
        var q = Programs.Run("qemu-io", ["--cache", "writeback", "--aio", "threads", "-f", format, a, .. commands]);
        var v = Programs.Run(Programs.Vdisk, ["io", "--cache", "writeback", "--aio", "threads", "-f", format, b, .. commands]);
        Assert.Equal((q.ExitCode, AnyTiming(q.Stdout)), (v.ExitCode, AnyTiming(v.Stdout)));
        // Automatic node names count every node the process made: only their shape can match.
        static string Names(string text) => Regex.Replace(text, "#block[0-9]+", "#blockN");
        Assert.Equal(Names(q.Stderr.Replace("qemu-io: ", "vdisk: ")), Names(v.Stderr));
        Assert.Equal(0, Programs.Run("qemu-img", "compare", "-q", a, b).ExitCode);
    }

    [Theory]
    // A protocol driver's name comes twice (format and protocol name under one label); without
    // bdrv_get_info (null-co) nothing follows and the command fails.
    [InlineData("-f", "file")]
    [InlineData("-f", "raw")]
    [InlineData("--image-opts", "driver=null-co,size=65536")]
    [InlineData("--image-opts", "driver=raw,file.driver=null-co,file.size=65536")]
    public void Info_NamesTheDriversAsQemuIoDoes(string option, string value)
    {
        using var dir = new TempDir();
        string image = dir.RawImage();
        string[] args = option == "-f" ? ["-f", value, image, "-c", "info"] : [option, value, "-c", "info"];
        var q = Programs.Run("qemu-io", args);
        var v = Programs.Run(Programs.Vdisk, ["io", .. args]);
        Assert.Equal((q.ExitCode, q.Stdout, q.Stderr), (v.ExitCode, v.Stdout, v.Stderr));
    }

    [Fact]
    public void Alloc_NamesOffsetsWithThreeDecimals()
    {
        // cvtstr: "%.3f" from KiB on, cut at ".000" (4 GiB + 1 MiB is "4.001 GiB", as in iotest 019).
        using var dir = new TempDir();
        var image = dir.File("big.qcow2");
        Assert.Equal(0, Programs.Run("qemu-img", "create", "-q", "-f", "qcow2", image, "5G").ExitCode);
        string[] script = ["-c", "alloc 4097M 64k", "-c", "alloc 1536 512", "-c", "alloc 4G", "-c", "alloc 1025k 1"];
        var q = Programs.Run("qemu-io", ["-r", "-f", "qcow2", image, .. script]);
        var v = Programs.Run(Programs.Vdisk, ["io", "-r", "-f", "qcow2", image, .. script]);
        Assert.Equal((q.ExitCode, q.Stdout, q.Stderr), (v.ExitCode, v.Stdout, v.Stderr));
    }

    /// <summary>
    /// Like <see cref="Normalize"/>, and also for the h:mm:ss form: qemu-io's aio_write -z never
    /// starts its clock, so it reports the time since the epoch.
    /// </summary>
    private static string AnyTiming(string output) => AnyTimingLine().Replace(Normalize(output), "$1 ops; TIME");

    [GeneratedRegex(@"^(\S.*, \d+) ops; \d+:\d\d:\d\d\.\d\d \(.*\)$", RegexOptions.Multiline)]
    private static partial Regex AnyTimingLine();
}

/// <summary>qemu-io's cache and AIO options: O_DIRECT for real, the same bytes and words as qemu-io.</summary>
public partial class ToolOutputTests
{
    private const string UnalignedScript =
        "write -P 1 3 5 | write -P 2 1000 5000 | writev -P 3 70000 1 2 3 | read -P 2 1000 5000 | read -v 0 16 | " +
        "write -z 100 100 | aio_write -P 4 1M-3 3 | aio_flush | read -P 4 1M-3 3 | truncate 1M | map";

    [Theory]
    [InlineData("raw", "-t none")]
    [InlineData("qcow2", "-t none")]
    [InlineData("raw", "-t directsync")]
    [InlineData("qcow2", "-n")]
    [InlineData("raw", "-n -i native")]
    [InlineData("qcow2", "-t none -i io_uring")]
    [InlineData("raw", "-k -t none")]
    public void DirectIo_UnalignedRequests_GiveQemuIosBytesAndOutput(string format, string options)
    {
        using var dir = new TempDir();
        string a = dir.File("a." + format), b = dir.File("b." + format);
        foreach (var image in new[] { a, b })
            Assert.Equal(0, Programs.Run("qemu-img", "create", "-q", "-f", format, image, "1M").ExitCode);
        string[] commands = [.. UnalignedScript.Split(" | ").SelectMany(c => new[] { "-c", c })];
        var q = Programs.Run("qemu-io", [.. options.Split(' '), "-f", format, a, .. commands]);
        var v = Programs.Run(Programs.Vdisk, ["io", .. options.Split(' '), "-f", format, b, .. commands]);
        Assert.Equal((q.ExitCode, AnyTiming(q.Stdout)), (v.ExitCode, AnyTiming(v.Stdout)));
        Assert.Equal(q.Stderr.Replace("qemu-io: ", "vdisk: "), v.Stderr);
        Assert.Equal(0, Programs.Run("qemu-img", "compare", "-q", a, b).ExitCode);
    }

    [Fact]
    public void CacheNone_OpensTheImageWithODirect()
    {
        using var dir = new TempDir();
        var image = dir.RawImage();
        var traced = Programs.Run("strace", "-f", "-e", "trace=openat", Programs.Vdisk, "io", "-t", "none", "-f", "raw", image, "-c", "read -q 1 7");
        Assert.Equal(0, traced.ExitCode);
        Assert.Contains($"\"{image}\", O_RDWR|O_DIRECT|O_CLOEXEC", traced.Stderr);
    }

    [Theory]
    [InlineData("-i bogus")]
    [InlineData("-i native")]
    [InlineData("-k")]
    [InlineData("-t bogus")]
    [InlineData("-d bogus")]
    [InlineData("-t none -i native -d unmap")]
    [InlineData("-t unsafe -i threads")]
    [InlineData("-U")]
    public void CacheAndAioOptions_AreCheckedAsQemuIoChecksThem(string options)
    {
        using var dir = new TempDir();
        var image = dir.RawImage();
        string[] args = [.. options.Split(' '), "-f", "raw", image, "-c", "write -q 0 512", "-c", "length"];
        var q = Programs.Run("qemu-io", args);
        var v = Programs.Run(Programs.Vdisk, ["io", .. args]);
        Assert.Equal((q.ExitCode, q.Stdout), (v.ExitCode, v.Stdout));
        Assert.Equal(q.Stderr.Replace("qemu-io: ", "vdisk: "), v.Stderr);
    }

    [Theory]
    [InlineData("open -r -U -o driver=raw,force-share=off IMAGE")]
    [InlineData("open -r -U -o driver=raw,force-share=on IMAGE")]
    [InlineData("open -U -o driver=raw IMAGE")]
    [InlineData("open -r -o driver=raw,force-share=off IMAGE")]
    public void OpenWithForceShare_IsCheckedAsQemuIoChecksIt(string command)
    {
        // iotest 153's "-U conflicts with image options" for the open command.
        using var dir = new TempDir();
        var image = dir.RawImage();
        string[] args = ["-c", command.Replace("IMAGE", image), "-c", "length"];
        var q = Programs.Run("qemu-io", args);
        var v = Programs.Run(Programs.Vdisk, ["io", .. args]);
        Assert.Equal((q.ExitCode, q.Stdout), (v.ExitCode, v.Stdout));
        Assert.Equal(q.Stderr.Replace("qemu-io: ", "vdisk: "), v.Stderr);
    }

    [Fact]
    public void TracePatterns_AreAcceptedAndIgnoredWithANote()
    {
        using var dir = new TempDir();
        var image = dir.RawImage();
        var v = Programs.Run(Programs.Vdisk, "io", "-T", "qcow2_*", "-f", "raw", image, "-c", "length");
        Assert.Equal((0, "1 MiB\n"), (v.ExitCode, v.Stdout));
        Assert.Equal("vdisk: warning: vdisk has no trace events; -T qcow2_* is ignored\n", v.Stderr);
    }
}
