using Vdisk.Interop.Support;
using Xunit;

namespace Vdisk.Interop;

/// <summary>
/// The blkdebug driver side by side with qemu-io and qemu-img 7.2: errors injected at the events
/// qcow2 announces (read_aio, write_aio, l2_load), the config file and option forms, and the
/// refusals of malformed configurations, compared line by line.
/// </summary>
public sealed class BlkdebugTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    /// <summary>A 1 MiB qcow2 image made and filled by the real QEMU tools (64 KiB of 0x11 at 0).</summary>
    private string Qcow2Image()
    {
        string path = _dir.File("t.qcow2");
        var create = Programs.Run("qemu-img", "create", "-q", "-f", "qcow2", path, "1M");
        Assert.True(create.ExitCode == 0, create.ToString());
        var write = Programs.Run("qemu-io", "-f", "qcow2", "-c", "write -q -P 0x11 0 64k", path);
        Assert.True(write.ExitCode == 0, write.ToString());
        return path;
    }

    private string Config(string text)
    {
        string path = _dir.File("blkdebug.conf");
        File.WriteAllText(path, text);
        return path;
    }

    private static void AssertSameAsQemu(string tool, params string[] args)
    {
        var theirs = Programs.Run(tool, args);
        var mine = Programs.Run(Programs.VdiskAs(tool), args);
        Assert.True((theirs.ExitCode, TimingMasked(theirs.Stdout), theirs.Stderr) == (mine.ExitCode, TimingMasked(mine.Stdout), mine.Stderr),
            $"{tool} {string.Join(' ', args)}\n{tool}: {theirs}\nvdisk: {mine}");
    }

    /// <summary>qemu-io's rate line differs from run to run.</summary>
    private static string TimingMasked(string text) =>
        System.Text.RegularExpressions.Regex.Replace(text, @"; [0-9:.]+ sec \(.*\)", "; TIME");

    [Fact]
    public void ReadAioError_FromAConfigFile_FailsTheDataReadsAsInQemuIo()
    {
        string image = Qcow2Image();
        string config = Config("[inject-error]\nevent = \"read_aio\"\nerrno = \"5\"\n");
        // The first read hits an allocated cluster (read_aio fires, then every request fails);
        // the length and a read of an unallocated range still answer.
        AssertSameAsQemu("qemu-io", "-f", "qcow2", "-c", "read -P 0x11 0 4k", "-c", "read 512k 4k", "-c", "length",
            $"blkdebug:{config}:{image}");
    }

    [Fact]
    public void WriteAioError_Once_FailsOnlyTheFirstWrite()
    {
        string image = Qcow2Image();
        string json = "json:{\"driver\": \"qcow2\", \"file\": {\"driver\": \"blkdebug\", \"inject-error\": [{\"event\": \"write_aio\", \"errno\": 28, \"once\": true}], " +
            $"\"image\": {{\"driver\": \"file\", \"filename\": \"{image}\"}}}}}}";
        AssertSameAsQemu("qemu-io", "-c", "write -P 0x22 0 4k", "-c", "write -P 0x33 0 4k", "-c", "read -P 0x33 0 4k", json);
    }

    [Fact]
    public void QemuImgCompare_ReportsTheInjectedReadError()
    {
        string image = Qcow2Image();
        string other = _dir.File("o.qcow2");
        File.Copy(image, other);
        string config = Config("[inject-error]\nevent = \"read_aio\"\n");
        AssertSameAsQemu("qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", $"blkdebug:{config}:{image}", other);
    }

    [Theory]
    [InlineData("foo = \"bar\"\n")]
    [InlineData("[inject-error]\nevent = \"read_aio\"\nbogus = \"1\"\n")]
    [InlineData("[nosuch]\nevent = \"read_aio\"\n")]
    [InlineData("[inject-error]\nevent = \"read_aio\"\nstate = \"x\"\n")]
    [InlineData("[inject-error]\nevent read_aio\n")]
    [InlineData("[inject-error]\nevent = \"nosuch_event\"\n")]
    public void MalformedConfigFiles_AreRefusedWithQemusMessage(string text)
    {
        string image = Qcow2Image();
        string config = Config(text);
        AssertSameAsQemu("qemu-io", "-f", "qcow2", "-c", "read 0 512", $"blkdebug:{config}:{image}");
    }

    [Theory]
    [InlineData("blkdebug:{0}.missing:{1}")]
    [InlineData("blkdebug:{1}")]
    public void BadFilenames_AreRefusedWithQemusMessage(string pattern)
    {
        string image = Qcow2Image();
        AssertSameAsQemu("qemu-io", "-f", "qcow2", "-c", "read 0 512", string.Format(System.Globalization.CultureInfo.InvariantCulture, pattern, _dir.File("c"), image));
    }

    [Theory]
    [InlineData("driver=qcow2,file.align=3")]
    [InlineData("driver=qcow2,file.align=4k,file.max-transfer=1000")]
    [InlineData("driver=qcow2,file.inject-error.0.event=l2_load,file.inject-error.0.bogus=1")]
    public void BadOptions_AreRefusedWithQemusMessage(string options)
    {
        string image = Qcow2Image();
        AssertSameAsQemu("qemu-io", "-c", $"open -o {options} blkdebug::{image}", "-c", "read 0 512");
    }
}
