using System.Text.RegularExpressions;
using Vdisk.Interop.Support;
using Xunit;

namespace Vdisk.Interop;

/// <summary>vdisk io and vdisk info print what qemu-io and qemu-img info print (timings aside).</summary>
public partial class ToolOutputTests
{
    [GeneratedRegex(@"^(\S.*), (\d+) ops; \d\d\.\d\d sec \([0-9.]+ (bytes|KiB|MiB|GiB|TiB)/sec and [0-9.]+ ops/sec\)$")]
    private static partial Regex TimingLine();

    [GeneratedRegex(@"^(\d+),(\d+),\d+:\d\d:\d\d\.\d\d,[0-9.]+,[0-9.]+$")]
    private static partial Regex MachineTimingLine();

    /// <summary>Replaces qemu-io's timing lines by their size-and-ops part, which is deterministic.</summary>
    internal static string Normalize(string output) => string.Join("\n", output.Split('\n').Select(line =>
    {
        var m = TimingLine().Match(line);
        if (m.Success) return $"{m.Groups[1].Value}, {m.Groups[2].Value} ops; TIME";
        var c = MachineTimingLine().Match(line);
        return c.Success ? $"{c.Groups[1].Value},{c.Groups[2].Value},TIME" : line;
    }));

    private static readonly string[] Script =
    [
        "write -P 0xab 0 4k", "write -z 64k 64k", "discard 128k 64k", "flush", "length", "info", "map",
        "read -P 0xab 0 4k", "read -P 0xac 0 512", "read -v 0 32", "read -q 0 1", "read -C 0 1",
        "read 2M 4k", "write 1M 1", "read -P 0 1k 1k", "read 0 1x", "read -P 300 0 1", "write -P 1 -z 0 1",
        "sleep x", "sleep 1", "read -s 3 -l 2 -P 0xab 0 8", "write -P 0x11 1536 1536", "read -P 0x11 1536 1536",
        "help sleep", "help length", "help nosuch", "bogus", "read", "map x", "read -Q 0 1", "close", "read 0 1", "quit", "read 0 1",
    ];

    private static string[] Args(string img) => ["-f", "raw", img, .. Script.SelectMany(c => new[] { "-c", c })];

    [Fact]
    public void IoCommandScript_PrintsWhatQemuIoPrints()
    {
        using var dir = new TempDir();
        var a = dir.RawImage("a.raw");
        var b = dir.RawImage("b.raw");
        var q = Programs.Run("qemu-io", Args(a));
        var v = Programs.Run(Programs.Vdisk, ["io", .. Args(b)]);
        Assert.Equal(q.ExitCode, v.ExitCode);
        Assert.Equal(Normalize(q.Stdout), Normalize(v.Stdout));
        Assert.Equal(q.Stderr.Replace("qemu-io: ", "vdisk: "), v.Stderr);
        Assert.Equal(System.IO.File.ReadAllBytes(a), System.IO.File.ReadAllBytes(b));
    }

    /// <summary>
    /// iotest 253: a raw file whose size is not a multiple of 512 with data up to its end. Through
    /// O_DIRECT the data extent is rounded up to the request alignment (file-posix may not report
    /// partial blocks); through the page cache the byte past the end reads as a hole.
    /// </summary>
    [Theory]
    [InlineData(",cache.direct=on")]
    [InlineData("")]
    public void Map_of_a_raw_file_with_a_partial_last_block_matches_qemu_img(string cache)
    {
        using var dir = new TempDir();
        var img = dir.File("t.raw");
        Qemu.Ok(Qemu.Img("create", "-q", "-f", "raw", img, "1M"));
        Qemu.Ok(Qemu.Io("-f", "raw", "-c", "write -P 7 960k 64k", img));
        using (var f = new FileStream(img, FileMode.Open, FileAccess.Write)) f.SetLength((1 << 20) - 1);
        string[] args = ["map", "--output=json", "--image-opts", $"driver=raw,file.driver=file,file.filename={img}{cache}"];
        var q = Qemu.Img(args);
        var v = Qemu.Vdisk(args);
        Assert.Equal(0, q.ExitCode);
        Assert.Equal(q.Stdout, v.Stdout);
    }

    [Fact]
    public void ReadOnlyWrite_FailsWithBlockNodeIsReadOnly()
    {
        using var dir = new TempDir();
        var img = dir.RawImage();
        var q = Programs.Run("qemu-io", "-r", "-f", "raw", img, "-c", "write 0 1");
        var v = Programs.Run(Programs.Vdisk, "io", "-r", "-f", "raw", img, "-c", "write 0 1");
        Assert.Equal(1, v.ExitCode);
        Assert.Equal(q.ExitCode, v.ExitCode);
        Assert.Equal("vdisk: Block node is read-only\n", v.Stderr);
        Assert.Equal(q.Stderr.Replace("qemu-io: ", "vdisk: "), v.Stderr);
    }

    [Fact]
    public void OpenAndCloseCommands_BehaveLikeQemuIo()
    {
        using var dir = new TempDir();
        var img = dir.RawImage();
        string[] script = ["-c", "read 0 1", "-c", $"open -r -o driver=raw {img}", "-c", "read -q 0 1", "-c", "write 0 1", "-c", $"open {img}", "-c", "close", "-c", "close", "-c", $"open -o driver=raw {img}", "-c", "write -q 0 1"];
        var q = Programs.Run("qemu-io", script);
        var v = Programs.Run(Programs.Vdisk, ["io", .. script]);
        Assert.Equal(q.ExitCode, v.ExitCode);
        Assert.Equal(Normalize(q.Stdout), Normalize(v.Stdout));
        Assert.Equal(q.Stderr.Replace("qemu-io: ", "vdisk: "), v.Stderr);
    }

    [Theory]
    [InlineData(1048576L)]
    [InlineData(1000000L)]
    [InlineData(1100000L)]
    [InlineData(0L)]
    public void Info_PrintsWhatQemuImgPrints(long size)
    {
        using var dir = new TempDir();
        var img = dir.File("i.raw");
        System.IO.File.WriteAllBytes(img, []);
        Assert.Equal(0, Programs.Run("truncate", "-s", size.ToString(System.Globalization.CultureInfo.InvariantCulture), img).ExitCode);
        Programs.Run("qemu-io", "-f", "raw", img, "-c", "write 0 512");
        foreach (var extra in new[] { Array.Empty<string>(), ["--output=json"], ["--output", "human"], ["-f", "raw"], ["-U"] })
        {
            var q = Programs.Run("qemu-img", ["info", .. extra, img]);
            var v = Programs.Run(Programs.Vdisk, ["info", .. extra, img]);
            Assert.Equal(q.ExitCode, v.ExitCode);
            Assert.Equal(q.Stdout, v.Stdout);
        }
    }

    [Fact]
    public void InfoOfJsonFilenameAndImageOpts_MatchesQemuImg()
    {
        using var dir = new TempDir();
        var img = dir.RawImage();
        var json = $"json:{{\"driver\":\"raw\",\"file\":{{\"driver\":\"file\",\"filename\":\"{img}\"}}}}";
        Assert.Equal(Programs.Run("qemu-img", "info", json).Stdout, Programs.Run(Programs.Vdisk, "info", json).Stdout);
        var opts = $"driver=raw,file.driver=file,file.filename={img}";
        Assert.Equal(Programs.Run("qemu-img", "info", "--image-opts", opts).Stdout, Programs.Run(Programs.Vdisk, "info", "--image-opts", opts).Stdout);
    }

    private static string QcowImageAndJson(TempDir dir, string jsonDriver)
    {
        string img = dir.File("disk.qcow2");
        Assert.Equal(0, Programs.Run("qemu-img", "create", "-q", "-f", "qcow2", img, "1M").ExitCode);
        return $"json:{{\"driver\":\"{jsonDriver}\",\"file.filename\":\"{img}\"}}";
    }

    [Theory]
    [InlineData("qcow2", "raw")]
    [InlineData("raw", "qcow2")]
    [InlineData("raw", null)]
    public void FormatGivenBesideAJsonFilename_WinsOverItsDriverAsInQemu(string jsonDriver, string? format)
    {
        using var dir = new TempDir();
        string json = QcowImageAndJson(dir, jsonDriver);
        string[] f = format is null ? [] : ["-f", format];
        var q = Programs.Run("qemu-img", ["info", .. f, json]);
        var v = Programs.Run(Programs.Vdisk, ["info", .. f, json]);
        Assert.Equal(q.Stdout, v.Stdout);
        Assert.Equal(q.ExitCode, v.ExitCode);
        Assert.Contains("file format: " + (format ?? jsonDriver), v.Stdout);
        var qi = Programs.Run("qemu-io", [.. f, json, "-c", "info"]);
        var vi = Programs.Run(Programs.Vdisk, ["io", .. f, json, "-c", "info"]);
        Assert.Equal(qi.Stdout, vi.Stdout);
    }

    [Theory]
    [InlineData("qcow2", "raw")]
    [InlineData("raw", "qcow2")]
    public void DriverOptionOfQemuIoOpen_WinsOverTheJsonFilenamesDriver(string jsonDriver, string driver)
    {
        // iotest 089's "option merging": qemu-io's open -o driver=X json:{"driver":"Y",...}.
        using var dir = new TempDir();
        string[] open = ["-c", $"open -o driver={driver} {QcowImageAndJson(dir, jsonDriver)}", "-c", "info"];
        var q = Programs.Run("qemu-io", open);
        var v = Programs.Run(Programs.Vdisk, ["io", .. open]);
        Assert.Equal(q.Stdout, v.Stdout);
        Assert.Contains("format name: " + driver, v.Stdout);
    }

    [Fact]
    public void RawOffsetAndSizeWindow_ReadsAndWritesTheSameBytesAsQemu()
    {
        using var dir = new TempDir();
        var a = dir.RawImage("a.raw");
        var b = dir.RawImage("b.raw");
        string[] script = ["-c", "write -P 0x22 0 4k", "-c", "write -P 0x33 8k 4k", "-c", "length", "-c", "read -P 0x22 0 4k", "-c", "write 12k 4k"];
        var q = Programs.Run("qemu-io", ["--image-opts", $"driver=raw,offset=4096,size=16384,file.filename={a}", .. script]);
        var v = Programs.Run(Programs.Vdisk, ["io", "--image-opts", $"driver=raw,offset=4096,size=16384,file.filename={b}", .. script]);
        Assert.Equal(Normalize(q.Stdout), Normalize(v.Stdout));
        Assert.Equal(q.ExitCode, v.ExitCode);
        Assert.Equal(System.IO.File.ReadAllBytes(a), System.IO.File.ReadAllBytes(b));
    }

    [Fact]
    public void ProbedRawImage_WarnsForWritersLikeQemuIo()
    {
        using var dir = new TempDir();
        var img = dir.RawImage();
        var q = Programs.Run("qemu-io", img, "-c", "read -q 0 1");
        var v = Programs.Run(Programs.Vdisk, "io", img, "-c", "read -q 0 1");
        Assert.Equal(q.Stderr, v.Stderr);
        Assert.StartsWith("WARNING: Image format was not specified", v.Stderr);
        Assert.Equal("", Programs.Run(Programs.Vdisk, "io", "-r", img, "-c", "read -q 0 1").Stderr);
    }
}
