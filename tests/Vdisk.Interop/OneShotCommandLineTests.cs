using System.Text.RegularExpressions;
using Vdisk.Interop.Support;
using Xunit;

namespace Vdisk.Interop;

/// <summary>
/// The everyday info and io command lines are read without System.CommandLine (the one-shot fast
/// path); everything else goes to the full parser. Each line here runs twice, as users run it and
/// with <c>VDISK_FULL_PARSER=1</c> (every line through the full parser), and both runs must print
/// the same stdout and stderr and exit alike: the fast path is invisible.
/// </summary>
public sealed class OneShotCommandLineTests : IDisposable
{
    private readonly TempDir _dir = new();
    private readonly Dictionary<string, string> _images;

    public OneShotCommandLineTests()
    {
        string raw = _dir.RawImage("disk.raw", 1 << 20);
        string qcow2 = _dir.File("disk.qcow2");
        Qemu.Ok(Qemu.Img("create", "-q", "-f", "qcow2", qcow2, "1M"));
        Qemu.Ok(Qemu.Io("-f", "qcow2", qcow2, "-c", "write -P 0x5a 0 64k"));
        string top = _dir.File("top.qcow2");
        Qemu.Ok(Qemu.Img("create", "-q", "-f", "qcow2", "-b", qcow2, "-F", "qcow2", top));
        string json = _dir.File("disk.json");
        File.WriteAllText(json, "not an image");
        _images = new()
        {
            ["{raw}"] = raw,
            ["{qcow2}"] = qcow2,
            ["{top}"] = top,
            ["{text}"] = json,
            ["{missing}"] = _dir.File("missing.qcow2"),
        };
    }

    public void Dispose() => _dir.Dispose();

    /// <summary>Lines the fast path reads (and a few it must leave alone but that look close).</summary>
    public static TheoryData<string, string> Lines() => new()
    {
        // info, as vdisk and as qemu-img
        { "vdisk", "info {qcow2}" },
        { "vdisk", "info {raw}" },
        { "qemu-img", "info {qcow2}" },
        { "qemu-img", "info -f qcow2 {qcow2}" },
        { "qemu-img", "info --format qcow2 {qcow2}" },
        { "qemu-img", "info -f raw {qcow2}" },
        { "qemu-img", "info -f qcow2 {raw}" },
        { "qemu-img", "info -f vmdk -f qcow2 {qcow2}" },
        { "qemu-img", "info -f nosuch {qcow2}" },
        { "qemu-img", "info {qcow2} -U" },
        { "qemu-img", "info --force-share {top}" },
        { "qemu-img", "info --output=json {qcow2}" },
        { "qemu-img", "info --output json {top}" },
        { "qemu-img", "info --output xml {qcow2}" },
        { "qemu-img", "info --output=json --output=human {qcow2}" },
        { "qemu-img", "info --backing-chain {top}" },
        { "qemu-img", "info --backing-chain --output=json {top}" },
        { "qemu-img", "info {missing}" },
        { "qemu-img", "info {text}" },
        { "qemu-img", "info -f qcow2 {text}" },
        { "vdisk", "info {missing}" },
        { "qemu-img", "info info" },
        // io, as vdisk and as qemu-io
        { "vdisk", "io -f raw {raw} -c 'read -q 0 4k'" },
        { "qemu-io", "-f raw {raw} -c 'read -q 0 4k'" },
        { "qemu-io", "-f qcow2 {qcow2} -c 'read -v 0 32'" },
        { "qemu-io", "{qcow2} -c 'read -P 0x5a -q 0 64k' -c 'read -P 0 -q 64k 64k'" },
        { "qemu-io", "-c 'write -q -P 7 0 512' -f raw {raw} -c 'read -v 0 16'" },
        { "qemu-io", "-r -f raw {raw} -c 'write 0 512'" },
        { "qemu-io", "--read-only --format raw {raw} -c 'read -q 0 1'" },
        { "qemu-io", "-U -f qcow2 {qcow2} -c 'map'" },
        { "qemu-io", "-n -f raw {raw} -c 'read -q 0 4k'" },
        { "qemu-io", "-t none -f raw {raw} -c 'read -q 0 4k'" },
        { "qemu-io", "-t nosuch -f raw {raw} -c 'read 0 4k'" },
        { "qemu-io", "--cache writeback --nocache -f raw {raw} --cmd 'read -q 0 4k'" },
        { "qemu-io", "-f raw {raw} -c 'read 0 4M'" },
        { "qemu-io", "-f raw {raw} -c nosuch" },
        { "qemu-io", "-f raw {raw} -c io" },
        { "qemu-io", "-f qcow2 {raw} -c 'read 0 4k'" },
        { "qemu-io", "-f raw {missing} -c 'read 0 4k'" },
        { "qemu-io", "{text} -c 'read -q 0 4'" },
        { "qemu-img", "io -f raw {raw} -c 'read 0 4k'" },
    };

    [Theory]
    [MemberData(nameof(Lines))]
    public void FastPath_PrintsWhatTheFullParserPrints(string tool, string line)
    {
        var (fast, full) = RunBoth(tool, line);

        Assert.Equal(Normalize(full), Normalize(fast));
    }

    /// <summary>Lines the fast path must hand to the full parser, and what that prints for them.</summary>
    public static TheoryData<string, string, string> FallBacks() => new()
    {
        { "qemu-img", "info {qcow2} {raw}", "qemu-img: Expecting one image file name\n" },
        { "qemu-img", "info --help", "Usage:\n" },
        { "qemu-img", "info -h {qcow2}", "Usage:\n" },
        { "qemu-img", "info -f", "qemu-img: missing argument for option '-f'\n" },
        { "qemu-img", "info --output", "qemu-img: missing argument for option '--output'\n" },
        { "qemu-img", "info --nosuch {qcow2}", "qemu-img: unrecognized option '--nosuch'\n" },
        { "qemu-img", "info -fqcow2 {qcow2}", "file format: qcow2\n" },
        { "qemu-img", "info --form qcow2 {qcow2}", "file format: qcow2\n" },
        { "qemu-img", "info --format=raw {qcow2}", "file format: raw\n" },
        { "qemu-img", "info -- {qcow2}", "file format: qcow2\n" },
        { "vdisk", "info --wait=1 {qcow2}", "file format: qcow2\n" },
        { "qemu-io", "-f raw {raw} {qcow2} -c 'read 0 4k'", "Description:\n" },
        { "qemu-io", "-f raw -c 'read 0 4k'", "no file open, try 'help open'\n" },
        { "qemu-io", "-rU -f raw {raw} -c 'read -q 0 4k'", "" },
        { "qemu-io", "-V", "qemu-io version 7.2.0" },
        { "qemu-io", "-f raw {raw} -c", "option requires an argument -- 'c'\n" },
    };

    [Theory]
    [MemberData(nameof(FallBacks))]
    public void OtherLines_GoToTheFullParser(string tool, string line, string expected)
    {
        var (fast, full) = RunBoth(tool, line);

        Assert.Equal(Normalize(full), Normalize(fast));
        Assert.Contains(expected, fast.Stdout + fast.Stderr);
    }

    [Fact]
    public void RefusedOpen_IsTheSameError()
    {
        string raw = _images["{raw}"];
        using var holder = Holder.Start(raw, Programs.LockProbe, "hold", raw, "read,write", "write");

        foreach (var (tool, line) in new[]
        {
            ("qemu-io", "-f raw {raw} -c 'write 0 4k'"),
            ("vdisk", "io -f raw {raw} -c 'read 0 4k'"),
            ("qemu-img", "info {raw}"),
            ("qemu-img", "info -U {raw}"),
        })
        {
            var (fast, full) = RunBoth(tool, line);
            Assert.Equal(Normalize(full), Normalize(fast));
        }
        var refused = RunBoth("qemu-io", "-f raw {raw} -c 'write 0 4k'").Fast;
        Assert.Equal(1, refused.ExitCode);
        Assert.Contains("Failed to get \"write\" lock", refused.Stderr);
    }

    private (RunResult Fast, RunResult Full) RunBoth(string tool, string line)
    {
        string program = tool == "vdisk" ? Programs.Vdisk : Programs.VdiskAs(tool);
        var args = Split(line).Select(a => _images.Aggregate(a, (s, kv) => s.Replace(kv.Key, kv.Value))).ToList();
        var fast = Programs.Run(program, args, null);
        var full = Programs.Run(program, args, new Dictionary<string, string> { ["VDISK_FULL_PARSER"] = "1" });
        return (fast, full);
    }

    /// <summary>Words of a line, with '...' quoting as a shell reads it.</summary>
    private static List<string> Split(string line) =>
        Regex.Matches(line, "'([^']*)'|(\\S+)").Select(m => m.Groups[1].Success ? m.Groups[1].Value : m.Groups[2].Value).ToList();

    /// <summary>The result without qemu-io's timings, which differ from run to run.</summary>
    private static string Normalize(RunResult r) =>
        Regex.Replace(r.ToString(), @"; [0-9:.]+ sec \([^)]*\)", "; TIME");
}
