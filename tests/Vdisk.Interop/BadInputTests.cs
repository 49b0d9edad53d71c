using Vdisk.Interop.Support;
using Xunit;

namespace Vdisk.Interop;

/// <summary>Bad input gets one clear line naming the file and the reason, a non-zero exit, no stack trace.</summary>
public class BadInputTests
{
    private static void AssertOneLineError(RunResult r, string expected)
    {
        Assert.Equal(1, r.ExitCode);
        Assert.Equal("", r.Stdout);
        Assert.Equal("vdisk: " + expected + "\n", r.Stderr);
    }

    [Fact]
    public void MissingFile()
    {
        using var dir = new TempDir();
        var missing = dir.File("nope.raw");
        AssertOneLineError(Programs.Run(Programs.Vdisk, "io", "-f", "raw", missing, "-c", "read 0 1"),
            $"can't open device {missing}: Could not open '{missing}': No such file or directory");
        AssertOneLineError(Programs.Run(Programs.Vdisk, "info", missing),
            $"Could not open '{missing}': Could not open '{missing}': No such file or directory");
    }

    [Fact]
    public void Directory()
    {
        using var dir = new TempDir();
        AssertOneLineError(Programs.Run(Programs.Vdisk, "io", "-f", "raw", dir.Path, "-c", "read 0 1"),
            $"can't open device {dir.Path}: Could not open '{dir.Path}': Is a directory");
        AssertOneLineError(Programs.Run(Programs.Vdisk, "io", "-r", "-f", "raw", dir.Path, "-c", "read 0 1"),
            $"can't open device {dir.Path}: 'file' driver requires '{dir.Path}' to be a regular file");
    }

    [Fact]
    public void NoReadPermission()
    {
        using var dir = new TempDir();
        var img = dir.RawImage();
        System.IO.File.SetUnixFileMode(dir.Path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.OtherExecute | UnixFileMode.OtherRead);
        System.IO.File.SetUnixFileMode(img, UnixFileMode.None);
        // As root every file is readable: run vdisk as an unprivileged user when we are root.
        var r = Environment.UserName == "root"
            ? Programs.Run("runuser", "-u", "nobody", "--", Programs.Vdisk, "io", "-r", "-f", "raw", img, "-c", "read 0 1")
            : Programs.Run(Programs.Vdisk, "io", "-r", "-f", "raw", img, "-c", "read 0 1");
        AssertOneLineError(r, $"can't open device {img}: Could not open '{img}': Permission denied");
    }

    [Theory]
    [InlineData("driver=raw,file.filename=IMG,bogus=1", "Block format 'raw' does not support the option 'bogus'")]
    [InlineData("driver=raw,file.filename=IMG,file.bogus=1", "Block protocol 'file' doesn't support the option 'bogus'")]
    [InlineData("driver=raw,file.filename=IMG,file.locking=maybe", "invalid parameter value: maybe")]
    [InlineData("driver=raw,file.filename=IMG,read-only=maybe", "Parameter 'read-only' expects 'on' or 'off'")]
    [InlineData("driver=raw,file.filename=IMG,offset=abc", "Parameter 'offset' expects a non-negative number below 2^64")]
    [InlineData("driver=raw", "A block device must be specified for \"file\"")]
    [InlineData("driver=raw,file.driver=file", "The 'file' block driver requires a file name")]
    [InlineData("driver=nosuch,file.filename=IMG", "Unknown driver 'nosuch'")]
    [InlineData("driver=raw,file.filename=IMG,file.driver=nosuch", "Unknown driver 'nosuch'")]
    [InlineData("driver=raw,file.filename=IMG,force-share=on", "force-share=on can only be used with read-only images")]
    [InlineData("driver=raw,file.filename=IMG,offset=2000000", "Offset (2000000) cannot be greater than size of the containing file (1048576)")]
    public void MalformedImageOptions_SameCoreAsQemuIo(string options, string expected)
    {
        using var dir = new TempDir();
        var img = dir.RawImage();
        string opts = options.Replace("IMG", img);
        var qemu = Programs.Run("qemu-io", "--image-opts", opts, "-c", "read 0 1");
        Assert.Equal(1, qemu.ExitCode);
        Assert.StartsWith("qemu-io: can't open: " + expected + "\n", qemu.Stderr);
        AssertOneLineError(Programs.Run(Programs.Vdisk, "io", "--image-opts", opts, "-c", "read 0 1"), "can't open: " + expected);
    }

    [Fact]
    public void ForceShareOnWritableOpen()
    {
        using var dir = new TempDir();
        var img = dir.RawImage();
        AssertOneLineError(Programs.Run(Programs.Vdisk, "io", "-U", "-f", "raw", img, "-c", "read 0 1"),
            $"can't open device {img}: force-share=on can only be used with read-only images");
    }

    [Fact]
    public void BrokenJsonFilename()
    {
        AssertOneLineError(Programs.Run(Programs.Vdisk, "info", "json:{\"driver\":\"raw\","),
            "Could not open 'json:{\"driver\":\"raw\",': Could not parse the JSON options: JSON parse error, premature EOI");
    }

    [Fact]
    public void UnknownCommandLineOption()
    {
        var r = Programs.Run(Programs.Vdisk, "io", "--bogus");
        Assert.Equal(1, r.ExitCode);
        Assert.Single(r.Stderr.TrimEnd('\n').Split('\n'));
        Assert.StartsWith("vdisk: ", r.Stderr);
        Assert.DoesNotContain("   at ", r.Stderr);
    }

    [Fact]
    public void ForceShareConflictingWithImageOptions()
    {
        using var dir = new TempDir();
        var img = dir.RawImage();
        AssertOneLineError(Programs.Run(Programs.Vdisk, "io", "-r", "-U", "--image-opts", $"driver=raw,file.filename={img},force-share=off", "-c", "read 0 1"),
            "-U conflicts with image options");
        AssertOneLineError(Programs.Run(Programs.Vdisk, "info", "-U", "--image-opts", $"driver=raw,file.filename={img},force-share=off"),
            "--force-share/-U conflicts with image options");
    }

    /// <summary>
    /// iotest 226: file-posix's three drivers each want their kind of file (file: regular;
    /// host_device, host_cdrom: a character or block device); a directory opened read-write fails
    /// at open(2). Same lines as qemu-io, read-only and read-write.
    /// </summary>
    [Theory]
    [InlineData("file", "DIR")]
    [InlineData("file", "/dev/null")]
    [InlineData("host_device", "DIR")]
    [InlineData("host_device", "/dev/null")]
    [InlineData("host_cdrom", "DIR")]
    public void File_protocol_drivers_refuse_the_wrong_kind_of_file_as_qemu_io(string driver, string target)
    {
        using var dir = new TempDir();
        string path = target == "DIR" ? dir.Path : target;
        foreach (var readOnly in new[] { "-r ", "" })
        {
            string open = $"open {readOnly}-o driver={driver},filename={path},locking=off";
            var q = Programs.Run("qemu-io", "-c", open);
            var v = Programs.Run(Programs.Vdisk, "io", "-c", open);
            Assert.Equal(q.Stdout, v.Stdout);
            Assert.Equal(q.Stderr.Replace("qemu-io: ", "vdisk: "), v.Stderr);
        }
    }

    [Theory]
    [InlineData("info")]
    [InlineData("check")]
    [InlineData("map")]
    [InlineData("measure")]
    public void UnknownOutputFormat_IsRefusedLikeQemuImg(string verb)
    {
        using var dir = new TempDir();
        var img = dir.RawImage();
        string[] args = verb == "measure" ? [verb, "--output=xml", "--size", "1M", "-O", "qcow2"] : [verb, "--output=xml", img];
        var q = Programs.Run("qemu-img", args);
        var v = Programs.Run(Programs.Vdisk, args);
        Assert.Equal(1, q.ExitCode);
        AssertOneLineError(v, "--output must be used with human or json as argument.");
        Assert.Equal(q.Stderr.Replace("qemu-img: ", "vdisk: "), v.Stderr);
    }
}
