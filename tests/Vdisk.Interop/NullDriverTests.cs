using Vdisk.Interop.Support;
using Xunit;

namespace Vdisk.Interop;

/// <summary>
/// The null-co and null-aio protocol drivers (QEMU's block/null.c), side by side with qemu-img
/// and qemu-io 7.2 under their own names: filenames, options and their refusals, sizes, block
/// status, and the permission checks (no file, so no lock bytes) that iotest 153 drives.
/// </summary>
public sealed class NullDriverTests
{
    private static void AssertSame(string tool, params string[] args)
    {
        var theirs = Programs.Run(tool, args);
        var mine = Programs.Run(Programs.VdiskAs(tool), args);
        Assert.True((theirs.ExitCode, theirs.Stdout, theirs.Stderr) == (mine.ExitCode, mine.Stdout, mine.Stderr),
            $"{tool} {string.Join(' ', args)}\n{tool}: {theirs}\nvdisk: {mine}");
    }

    [Theory]
    [InlineData("info null-co://")]
    [InlineData("info -f null-co null-co://")]
    [InlineData("info -f null-aio null-aio://")]
    [InlineData("info -f raw null-co://")]
    [InlineData("info null-co://foo")]
    [InlineData("info null-aio:///x")]
    [InlineData("info --image-opts driver=null-co")]
    [InlineData("info --image-opts driver=null-aio")]
    [InlineData("info --image-opts driver=null-co,size=1M,read-zeroes=on")]
    [InlineData("info --image-opts driver=null-aio,size=4096,read-zeroes=true")]
    [InlineData("info --image-opts driver=null-co,read-zeroes=off")]
    [InlineData("info --image-opts driver=null-co,size=1000")]
    [InlineData("info --image-opts driver=null-co,size=0")]
    [InlineData("info --image-opts driver=null-co,size=1M,latency-ns=5")]
    [InlineData("info --image-opts driver=null-co,latency-ns=1000")]
    [InlineData("info --output=json --image-opts driver=null-co,size=1M")]
    [InlineData("info --output=json --image-opts driver=null-co,latency-ns=1000")]
    [InlineData("info --image-opts driver=null-co,bogus=1")]
    [InlineData("info --image-opts driver=null-co,filename=null-co://")]
    [InlineData("info --image-opts driver=null-co,latency-ns=-1")]
    [InlineData("info -U --image-opts driver=null-co,force-share=on")]
    [InlineData("info -U --image-opts driver=null-co,force-share=off")]
    [InlineData("map --output=json -f null-co null-co://")]
    [InlineData("map --output=json --image-opts driver=null-co,read-zeroes=on,size=1M")]
    [InlineData("map --image-opts driver=null-co,read-zeroes=on,size=1M")]
    [InlineData("map --output=json -f raw null-co://")]
    [InlineData("map --output=json --image-opts driver=raw,file.driver=null-co,file.size=1M,file.read-zeroes=on")]
    [InlineData("resize --image-opts driver=null-co 2G")]
    [InlineData("check --image-opts driver=null-co")]
    [InlineData("compare --image-opts driver=null-co,read-zeroes=on,size=1M driver=null-aio,read-zeroes=on,size=1M")]
    public void QemuImg_SeesTheNullDriversAsQemuImgDoes(string args) => AssertSame("qemu-img", args.Split(' '));

    [Theory]
    [InlineData("-c", "open -r -U -o driver=null-co,force-share=on")]
    [InlineData("--image-opts", "driver=null-co,read-zeroes=on,size=1M", "-c", "read -v 0 16", "-c", "read -P 0 0 512", "-c", "write -P 1 0 512", "-c", "read -P 0 0 512")]
    [InlineData("--image-opts", "driver=null-co,size=1M", "-c", "write -P 1 0 512", "-c", "write -z 0 64k", "-c", "discard 0 64k", "-c", "flush", "-c", "map", "-c", "length")]
    [InlineData("--image-opts", "driver=null-aio,size=4k,read-zeroes=on", "-c", "map", "-c", "read 4096 1")]
    public void QemuIo_UsesTheNullDriversAsQemuIoDoes(params string[] args)
    {
        var theirs = Programs.Run("qemu-io", args);
        var mine = Programs.Run(Programs.VdiskAs("qemu-io"), args);
        Assert.Equal(theirs.ExitCode, mine.ExitCode);
        Assert.Equal(TimingMasked(theirs.Stdout), TimingMasked(mine.Stdout));
        Assert.Equal(theirs.Stderr, mine.Stderr);
    }

    /// <summary>qemu-io's rate line ("512 bytes, 1 ops; 00.00 sec (...)") differs from run to run.</summary>
    [Fact]
    public void QemuIo_ReportsASlowRequestsTimeAsQemuIoDoes()
    {
        // A request of a second or more is timed "h:mm:ss.ss" (timestr), with and without -C.
        string[] args = ["--image-opts", "driver=null-co,size=1M,latency-ns=1100000000", "-c", "read 0 4k", "-c", "read -C 0 4k"];
        var theirs = Programs.Run("qemu-io", args);
        var mine = Programs.Run(Programs.VdiskAs("qemu-io"), args);
        Assert.Equal(0, theirs.ExitCode);
        Assert.Contains("; 0:00:01.", theirs.Stdout);
        Assert.Equal(theirs.ExitCode, mine.ExitCode);
        Assert.Equal(DigitsMasked(theirs.Stdout), DigitsMasked(mine.Stdout));
    }

    private static string DigitsMasked(string text) => System.Text.RegularExpressions.Regex.Replace(text, "[0-9]", "N");

    private static string TimingMasked(string text) =>
        System.Text.RegularExpressions.Regex.Replace(text, @"; [0-9:.]+ sec \(.*\)", "; TIME");
}
