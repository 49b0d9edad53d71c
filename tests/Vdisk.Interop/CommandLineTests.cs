using Vdisk.Interop.Support;
using Xunit;

namespace Vdisk.Interop;

/// <summary>
/// The command line is read as QEMU's tools read theirs (GNU getopt_long), and a wrong one is
/// answered in their words: the unknown verb or option itself is named, never a neighbour.
/// </summary>
public class CommandLineTests
{
    private static string[] Words(string line, string img) =>
        line.Split(' ', StringSplitOptions.RemoveEmptyEntries).Select(w => w.Replace("IMG", img)).ToArray();

    [Theory]
    [InlineData("")]
    [InlineData("frobnicate")]
    [InlineData("frobnicate IMG")]
    [InlineData("--bogus")]
    [InlineData("-x")]
    [InlineData("info --outptu=json IMG")]
    [InlineData("info IMG --outptu=json")]
    [InlineData("info -x IMG")]
    [InlineData("info -Ux IMG")]
    [InlineData("info --f IMG")]
    [InlineData("info --fo=raw IMG")]
    [InlineData("info --force-share=1 IMG")]
    [InlineData("info -f")]
    [InlineData("info --format")]
    [InlineData("info IMG --output")]
    [InlineData("info")]
    [InlineData("info IMG IMG")]
    [InlineData("check --output=json IMG IMG")]
    [InlineData("map")]
    [InlineData("compare IMG")]
    [InlineData("create")]
    [InlineData("resize")]
    [InlineData("resize IMG")]
    [InlineData("resize -U IMG 1M")]
    [InlineData("commit -U IMG")]
    [InlineData("amend -U -o size=1M IMG")]
    // What getopt_long accepts: abbreviations, operands before options, "--".
    [InlineData("info --out=json IMG")]
    [InlineData("info IMG --output json")]
    [InlineData("info --output=json --backing IMG")]
    [InlineData("info -f raw -- IMG")]
    [InlineData("info -f qcow2 -f raw IMG")]
    public void CommandLine_IsReadAndRefusedAsQemuImgDoes(string line)
    {
        using var dir = new TempDir();
        var img = dir.RawImage();
        var q = Programs.Run("qemu-img", Words(line, img));
        var v = Programs.Run(Programs.Vdisk, Words(line, img));
        Assert.Equal(q.ExitCode, v.ExitCode);
        Assert.Equal(q.Stdout, v.Stdout);
        Assert.Equal(q.Stderr.Replace("qemu-img", "vdisk"), v.Stderr);
    }

    [Fact]
    public void BadOptionInTheMiddleOfABundle_IsNamedByItsWord()
    {
        // qemu-img names the word before ('info') here, a getopt artefact; vdisk names the word holding it.
        using var dir = new TempDir();
        var img = dir.RawImage();
        var v = Programs.Run(Programs.Vdisk, "info", "-xU", img);
        Assert.Equal(1, v.ExitCode);
        Assert.Equal("vdisk: unrecognized option '-xU'\nTry 'vdisk --help' for more information\n", v.Stderr);
    }

    [Theory]
    [InlineData("--bogus")]
    [InlineData("-x")]
    [InlineData("--cmd")]
    [InlineData("-c")]
    [InlineData("--read-only=1")]
    [InlineData("--format")]
    public void IoCommandLine_IsRefusedAsQemuIoDoes(string option)
    {
        var q = Programs.Run("qemu-io", option);
        var v = Programs.Run(Programs.Vdisk, "io", option);
        Assert.Equal(q.ExitCode, v.ExitCode);
        Assert.Equal(q.Stderr.Replace("qemu-io: ", "vdisk: "), v.Stderr);
        // Like qemu-io, the usage follows on stdout.
        Assert.Contains("Usage:", v.Stdout);
    }

    [Fact]
    public void IoWithFormatAndImageOptions_IsRefusedLikeQemuIo()
    {
        using var dir = new TempDir();
        var img = dir.RawImage();
        string[] args = ["-f", "raw", "--image-opts", $"driver=raw,file.filename={img}", "-c", "length"];
        var q = Programs.Run("qemu-io", args);
        var v = Programs.Run(Programs.Vdisk, ["io", .. args]);
        Assert.Equal(1, v.ExitCode);
        Assert.Equal(q.ExitCode, v.ExitCode);
        Assert.Equal(q.Stdout, v.Stdout);
        Assert.Equal(q.Stderr.Replace("qemu-io: ", "vdisk: "), v.Stderr);
    }

    [Fact]
    public void IoWithTwoImages_PrintsUsageLikeQemuIo()
    {
        var q = Programs.Run("qemu-io", "a", "b");
        var v = Programs.Run(Programs.Vdisk, "io", "a", "b");
        Assert.Equal(1, v.ExitCode);
        Assert.Equal(q.ExitCode, v.ExitCode);
        Assert.Equal(q.Stderr, v.Stderr);
        Assert.Contains("Usage:", v.Stdout);
    }

    /// <summary>
    /// --wait has an optional value, so (getopt's rule for optional values) it is given only with
    /// '=': "--wait 5 img" waits without limit on an image named "5", and "img" is one operand too many.
    /// </summary>
    [Fact]
    public void WaitValue_IsAttachedWithEqualsOnly()
    {
        using var dir = new TempDir();
        var img = dir.RawImage();
        var plain = Programs.Run(Programs.Vdisk, "info", img);
        Assert.Equal(0, plain.ExitCode);
        Assert.Equal(plain, Programs.Run(Programs.Vdisk, "info", "--wait", img));
        Assert.Equal(plain, Programs.Run(Programs.Vdisk, "info", img, "--wait"));
        Assert.Equal(plain, Programs.Run(Programs.Vdisk, "info", "--wait=5", img));
        Assert.Equal(plain, Programs.Run(Programs.Vdisk, "info", "--wa=5", img));

        var spaced = Programs.Run(Programs.Vdisk, "info", "--wait", "5", img);
        Assert.Equal(1, spaced.ExitCode);
        Assert.Equal("vdisk: Expecting one image file name\nTry 'vdisk --help' for more information\n", spaced.Stderr);

        var io = Programs.Run(Programs.Vdisk, "io", "--wait", "5", "-f", "raw", img, "-c", "length");
        Assert.Equal(1, io.ExitCode);
        Assert.Contains("Usage:", io.Stdout);

        var bad = Programs.Run(Programs.Vdisk, "info", "--wait=soon", img);
        Assert.Equal(1, bad.ExitCode);
        Assert.Equal("vdisk: --wait: invalid number of seconds 'soon'\nTry 'vdisk --help' for more information\n", bad.Stderr);
    }
}
