using System.Text.RegularExpressions;
using Vdisk.Interop.Support;
using Xunit;

namespace Vdisk.Interop;

/// <summary>
/// Multi-call: vdisk started through a symlink named like a QEMU tool behaves as that tool, with
/// its name in every message and QEMU's shape of --version; under its own name it stays vdisk.
/// Each case runs the real tool and vdisk under the same name and compares what a script sees.
/// </summary>
public sealed partial class MultiCallTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    /// <summary>A symlink named <paramref name="tool"/> to the vdisk under test, in a directory of its own.</summary>
    private string As(string tool)
    {
        string links = _dir.File("links");
        Directory.CreateDirectory(links);
        string link = Path.Combine(links, tool);
        if (!System.IO.File.Exists(link)) System.IO.File.CreateSymbolicLink(link, Programs.Vdisk);
        return link;
    }

    [GeneratedRegex(@"^(qemu-img|qemu-io|qemu-storage-daemon) version 7\.2\.\d+ \((vdisk \d+\.\d+\.\d+|Debian [^)]+)\)$")]
    private static partial Regex VersionLine();

    [Theory]
    [InlineData("qemu-img", "--version")]
    [InlineData("qemu-img", "-V")]
    [InlineData("qemu-img", "--vers")]
    [InlineData("qemu-io", "-V")]
    [InlineData("qemu-io", "--version")]
    [InlineData("qemu-storage-daemon", "--version")]
    [InlineData("qemu-storage-daemon", "-V")]
    public void Version_KeepsQemusShapeWithVdisksVersion(string tool, string option)
    {
        var q = Programs.Run(tool, option);
        var v = Programs.Run(As(tool), option);
        Assert.Equal(0, v.ExitCode);
        string[] qLines = q.Stdout.Split('\n'), vLines = v.Stdout.Split('\n');
        Assert.Matches(VersionLine(), qLines[0]);
        Assert.Matches(VersionLine(), vLines[0]);
        Assert.StartsWith($"{tool} version 7.2.", vLines[0]);
        Assert.Contains("(vdisk ", vLines[0]);
        Assert.Equal(qLines[1..], vLines[1..]);
        Assert.Equal("", v.Stderr);
    }

    public static TheoryData<string, string[]> Errors => new()
    {
        { "qemu-img", [] },
        { "qemu-img", ["frobnicate"] },
        { "qemu-img", ["io", "x.img"] },
        { "qemu-img", ["locks"] },
        { "qemu-img", ["--outptu=json"] },
        { "qemu-img", ["info", "--outptu=json", "x.img"] },
        { "qemu-img", ["info", "missing.img"] },
        { "qemu-img", ["create", "-f", "qcow2", "x.qcow2"] },
        { "qemu-io", ["-f", "raw", "-c", "read 0 512", "missing.img"] },
        { "qemu-io", ["--frob"] },
        { "qemu-storage-daemon", ["--frob"] },
        { "qemu-storage-daemon", ["--blockdev", "raw,node-name=d,file.driver=file,file.filename=missing.img"] },
    };

    [Theory]
    [MemberData(nameof(Errors))]
    public void Errors_NameTheToolAsQemuDoes(string tool, string[] args)
    {
        var q = Programs.Run(tool, args, null);
        var v = Programs.Run(As(tool), args, null);
        Assert.NotEqual(0, q.ExitCode);
        Assert.Equal((q.ExitCode, q.Stderr), (v.ExitCode, v.Stderr));
    }

    [Fact]
    public void QemuImg_CreatesAndDescribesImagesAsQemuImg()
    {
        string a = _dir.File("a.qcow2"), b = _dir.File("b.qcow2");
        var qc = Programs.Run("qemu-img", "create", "-f", "qcow2", a, "1M");
        var vc = Programs.Run(As("qemu-img"), "create", "-f", "qcow2", b, "1M");
        Assert.Equal(qc.Stdout.Replace(a, b), vc.Stdout);
        var qi = Programs.Run("qemu-img", "info", "--output=json", a);
        var vi = Programs.Run(As("qemu-img"), "info", "--output=json", a);
        Assert.Equal((0, qi.Stdout), (vi.ExitCode, vi.Stdout));
    }

    [Fact]
    public void QemuIo_LockConflictSaysQemuIo()
    {
        // qcow2: its file child refuses to share write, so a second writer is refused.
        string img = _dir.File("held.qcow2");
        Assert.Equal(0, Programs.Run("qemu-img", "create", "-q", "-f", "qcow2", img, "1M").ExitCode);
        using var holder = Holder.Start(img, "qemu-io", "-f", "qcow2", img, "-c", "sleep 600000");
        var q = Programs.Run("qemu-io", "-f", "qcow2", "-c", "write 0 512", img);
        var v = Programs.Run(As("qemu-io"), "-f", "qcow2", "-c", "write 0 512", img);
        Assert.Contains("Failed to get \"write\" lock", v.Stderr);
        Assert.Equal((q.ExitCode, q.Stdout, q.Stderr), (v.ExitCode, v.Stdout, v.Stderr));
    }

    [Fact]
    public void QemuIo_RunsCommandsAsQemuIo()
    {
        string a = _dir.RawImage("a.raw"), b = _dir.RawImage("b.raw");
        string[] script = ["-c", "write -P 0xab 0 4k", "-c", "read -P 0xab 0 4k", "-c", "bogus"];
        var q = Programs.Run("qemu-io", ["-f", "raw", a, .. script], null);
        var v = Programs.Run(As("qemu-io"), ["-f", "raw", b, .. script], null);
        Assert.Equal(q.ExitCode, v.ExitCode);
        Assert.Equal(StripTimings(q.Stdout), StripTimings(v.Stdout));
        Assert.Equal(q.Stderr, v.Stderr);
        Assert.Equal(System.IO.File.ReadAllBytes(a), System.IO.File.ReadAllBytes(b));
    }

    [GeneratedRegex(@"\d\d\.\d\d sec \([^)]*\)")]
    private static partial Regex Timing();

    private static string StripTimings(string output) => Timing().Replace(output, "TIME");

    [Fact]
    public void UnderItsOwnName_VdiskStaysVdisk()
    {
        var v = Programs.Run(Programs.Vdisk, "frobnicate");
        Assert.Equal((1, "vdisk: Command not found: frobnicate\nTry 'vdisk --help' for more information\n"), (v.ExitCode, v.Stderr));
        // A link with another name is vdisk too: only QEMU's four names change the tool.
        var other = Programs.Run(As("my-vdisk"), "frobnicate");
        Assert.Equal(v.Stderr, other.Stderr);
        var io = Programs.Run(Programs.Vdisk, "io", "-V");
        Assert.StartsWith("qemu-io version 7.2.0 (vdisk ", io.Stdout);
    }
}
