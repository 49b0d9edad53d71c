using System.Text.RegularExpressions;
using Vdisk.Interop.Support;
using Xunit;

namespace Vdisk.Interop;

/// <summary>
/// The <c>throttle</c> filter and <c>throttle-group</c> objects side by side with qemu-img,
/// qemu-io and qemu-storage-daemon 7.2: the group's property errors, the node's open errors,
/// what info, map and check show through it, qemu-io's I/O through it, and qemu-img's help text
/// (whose format list iotest 184 reads).
/// </summary>
public sealed class ThrottleTests
{
    private const string Group = "throttle-group,id=g0,limits.iops-total=1000";

    /// <summary>Runs the QEMU tool, then vdisk as it, each on a fresh copy of a qcow2 image with data, and compares everything.</summary>
    private static void AssertSame(string tool, params string[] args)
    {
        RunResult Run(string program)
        {
            using var dir = new TempDir();
            string image = FormatCompat.Make(dir, "t.qcow2", "qcow2", "", "1M", "write -P 7 64k 64k");
            var result = Programs.Run(program, args.Select(a => a.Replace("{img}", image)).ToArray());
            return new RunResult(result.ExitCode, Masked(result.Stdout, image), Masked(result.Stderr, image));
        }
        var theirs = Run(tool);
        var mine = Run(Programs.VdiskAs(tool));
        Assert.True((theirs.ExitCode, theirs.Stdout, theirs.Stderr) == (mine.ExitCode, mine.Stdout, mine.Stderr),
            $"{tool} {string.Join(' ', args)}\n{tool}: {theirs}\nvdisk: {mine}");
    }

    /// <summary>The image's temporary path, and qemu-io's rate line (it differs from run to run).</summary>
    private static string Masked(string text, string image) =>
        Regex.Replace(text.Replace(image, "{img}"), @"; [0-9:.]+ sec \(.*\)", "; TIME");

    private static string ThrottledQcow2 => "driver=throttle,throttle-group=g0,file.driver=qcow2,file.file.filename={img}";

    public static TheoryData<string> BadGroups() =>
    [
        "throttle-group", "throttle-group,id=0g", "throttle-group,id=g0,limits=5",
        "throttle-group,id=g0,x-iops-total=10,x-iops-read=5", "throttle-group,id=g0,limits.iops-total=10,limits.iops-read=5",
        "throttle-group,id=g0,x-iops-total=-1", "throttle-group,id=g0,x-iops-total=abc", "throttle-group,id=g0,limits.iops-total=1e3",
        "throttle-group,id=g0,x-iops-total-max-length=5000000000", "throttle-group,id=g0,limits.iops-total-max-length=5000000000",
        "throttle-group,id=g0,bogus=1", "throttle-group,id=g0,limits.bogus=1", "throttle-group,id=g0,x-iops-size=1",
        "throttle-group,id=g0,limits.iops-total-max=10", "throttle-group,id=g0,x-bps-total=5,x-bps-total-max=4",
        "throttle-group,id=g0,limits.iops-read-max-length=-1", "throttle-group,id=g0,limits.iops-read=-1",
        "throttle-group,id=g0,x-iops-total=99999999999999999999", "throttle-group,id=g0,limits.iops-total=5,limits.iops-total-max-length=2",
    ];

    [Theory]
    [MemberData(nameof(BadGroups))]
    public void BadGroup_SameErrorAsQemuIoAndQemuImg(string group)
    {
        AssertSame("qemu-io", "--object", group, "--image-opts", ThrottledQcow2, "-c", "read 0 1");
        AssertSame("qemu-img", "info", "--object", group, "--image-opts", ThrottledQcow2);
    }

    [Theory]
    [InlineData("throttle-group,id=g0", "throttle-group,id=g0")]
    [InlineData("secret,id=g0,data=x", "throttle-group,id=g0")]
    [InlineData("throttle-group,id=g0", "secret,id=g0,data=x")]
    public void ObjectIds_ShareOneNamespace(string first, string second) =>
        AssertSame("qemu-img", "info", "--object", first, "--object", second, "{img}");

    [Theory]
    [InlineData("driver=throttle,file.driver=null-co")]
    [InlineData("driver=throttle,throttle-group=nope,file.driver=null-co")]
    [InlineData("driver=throttle,throttle-group=g0")]
    [InlineData("driver=throttle,throttle-group=g0,file.driver=null-co,bogus=1")]
    [InlineData("driver=throttle,throttle-group=g0,file.driver=null-co")]
    [InlineData("driver=throttle,throttle-group=g0,file.filename={img}")]
    [InlineData("driver=throttle,throttle-group=g0,file.filename={img},read-only=on")]
    [InlineData("driver=throttle,throttle-group=g0,file.driver=qcow2,file.file.filename={img}")]
    public void Info_ThroughTheFilter_AsQemuImg(string options)
    {
        AssertSame("qemu-img", "info", "--object", Group, "--image-opts", options);
        AssertSame("qemu-img", "info", "--output=json", "--object", Group, "--image-opts", options);
    }

    [Theory]
    [InlineData("map")]
    [InlineData("map --output=json")]
    [InlineData("check")]
    [InlineData("check --output=json")]
    [InlineData("measure -O qcow2")]
    [InlineData("snapshot -l")]
    public void OtherVerbs_ThroughTheFilter_AsQemuImg(string verb) =>
        AssertSame("qemu-img", [.. verb.Split(' '), "--object", Group, "--image-opts", ThrottledQcow2]);

    [Fact]
    public void JsonFilename_OpensTheFilter() =>
        AssertSame("qemu-img", "info", "--object", Group,
            "json:{\"driver\":\"throttle\",\"throttle-group\":\"g0\",\"file\":{\"driver\":\"qcow2\",\"file\":{\"driver\":\"file\",\"filename\":\"{img}\"}}}");

    [Fact]
    public void Io_ThroughTheFilter_AsQemuIo() =>
        AssertSame("qemu-io", "--object", Group, "--image-opts", ThrottledQcow2,
            "-c", "write -P 1 0 64k", "-c", "read -P 1 0 64k", "-c", "read -P 7 64k 64k", "-c", "write -z 128k 64k",
            "-c", "discard 0 64k", "-c", "map", "-c", "flush", "-c", "length", "-c", "info",
            "-c", "aio_write -P 3 0 4k", "-c", "aio_flush", "-c", "read -v 0 16", "-c", "write -c 192k 64k",
            "-c", "truncate 2M", "-c", "length");

    [Fact]
    public void Io_UnderAByteLimit_StillCompletesEveryRequest() =>
        // 100 KB/s: the third and fourth 30 KiB writes wait for the bucket; the output is the same.
        AssertSame("qemu-io", "--object", "throttle-group,id=g0,limits.bps-total=100000", "--image-opts", ThrottledQcow2,
            "-c", "write 0 30k", "-c", "write 0 30k", "-c", "aio_write 0 30k", "-c", "aio_write 0 30k", "-c", "aio_flush", "-c", "read 0 30k");

    [Fact]
    public void ReadOnlyFilter_RefusesWrites_AsQemuIo() =>
        AssertSame("qemu-io", "-r", "--object", Group, "--image-opts", ThrottledQcow2, "-c", "write 0 1");

    [Fact]
    public void ObjectHelp_ListsThrottleGroup()
    {
        var mine = Programs.Run(Programs.VdiskAs("qemu-img"), "info", "--object", "help", "x");
        Assert.Equal(0, mine.ExitCode);
        Assert.Equal("List of user creatable objects:\n  secret\n  throttle-group\n", mine.Stdout);
    }

    [Theory]
    [InlineData("--help")]
    [InlineData("-h")]
    [InlineData("--he")]
    public void Help_IsQemuImgsText_WithVdisksVersionAndDrivers(string option)
    {
        var theirs = Programs.Run("qemu-img", option);
        var mine = Programs.Run(Programs.VdiskAs("qemu-img"), option);
        Assert.Equal((0, ""), (mine.ExitCode, mine.Stderr));
        var theirLines = theirs.Stdout.Split('\n');
        var myLines = mine.Stdout.Split('\n');
        Assert.Equal(theirLines.Length, myLines.Length);
        Assert.StartsWith("qemu-img version 7.2.0 (vdisk ", myLines[0]);
        int formatsLine = Array.FindIndex(theirLines, l => l.StartsWith("Supported formats:", StringComparison.Ordinal));
        Assert.True(formatsLine > 0);
        for (int i = 1; i < theirLines.Length; i++)
        {
            if (i != formatsLine) Assert.Equal(theirLines[i], myLines[i]);
        }

        // vdisk's drivers, each one QEMU has, in QEMU's order; throttle and quorum among them.
        var qemuFormats = theirLines[formatsLine].Split(' ')[2..].ToList();
        var myFormats = myLines[formatsLine].Split(' ')[2..].ToList();
        Assert.StartsWith("Supported formats: ", myLines[formatsLine]);
        Assert.Contains("throttle", myFormats);
        Assert.Contains("quorum", myFormats);
        Assert.Contains("qcow2", myFormats);
        Assert.Equal(myFormats.OrderBy(f => qemuFormats.IndexOf(f)).ToList(), myFormats);
        Assert.All(myFormats, f => Assert.Contains(f, qemuFormats));
    }

    [Fact]
    public void StorageDaemonAndQemuNbd_TakeThrottleGroups_WithTheirErrors()
    {
        AssertSame("qemu-storage-daemon", "--object", "throttle-group,id=g0,x-iops-total=-1");
        AssertSame("qemu-nbd", "--object", "throttle-group,id=g0,limits.bogus=1", "{img}");
        AssertSame("qemu-nbd", "--object", "throttle-group,id=g0", "--image-opts", "driver=throttle,throttle-group=nope,file.filename={img}");
    }
}
