using Vdisk.Interop.Support;
using Xunit;

namespace Vdisk.Interop.Qcow2;

/// <summary>
/// The corners of the qemu-img verbs where a script sees the difference: each case runs the same
/// command line with qemu-img 7.2 and with vdisk and expects the same output, exit code and data.
/// </summary>
public class ImgVerbsCompatTests
{
    private static void Img(string dir, params string[] args) => Qemu.Ok(SideBySide.RunIn(dir, "qemu-img", args));

    private static void Io(string dir, string image, params string[] commands) =>
        Qemu.Ok(SideBySide.RunIn(dir, "qemu-io", [.. Qemu.Commands(commands), image]));

    [Fact]
    public void Convert_with_B_writes_zeroes_where_a_source_without_backing_file_holds_nothing()
    {
        using var sides = new SideBySide(dir =>
        {
            Img(dir, "create", "-q", "-f", "qcow2", "s.qcow2", "4M");
            Io(dir, "s.qcow2", "write -P 1 0 64k");
            Img(dir, "create", "-q", "-f", "qcow2", "b.qcow2", "4M");
            Io(dir, "b.qcow2", "write -P 7 0 4M");
        });
        sides.Same("convert", "-B", "b.qcow2", "-F", "qcow2", "-O", "qcow2", "s.qcow2", "v.qcow2");
        Qemu.AssertIdentical(Path.Combine(sides.MyDir, "s.qcow2"), Path.Combine(sides.MyDir, "v.qcow2"));
        sides.AssertSameImage("v.qcow2");
    }

    /// <summary>
    /// The source's backing file is shorter than the source. qemu-img 7.2 leaves an unallocated
    /// range that starts inside the old backing file and runs past its end to the new backing
    /// file as a whole, so the target reads the new backing file's data where the source reads
    /// zeroes; vdisk zeroes the part past the end (docs/compatibility.md).
    /// </summary>
    [Fact]
    public void Convert_with_B_zeroes_what_lies_past_the_end_of_the_sources_backing_file()
    {
        using var sides = new SideBySide(dir =>
        {
            Img(dir, "create", "-q", "-f", "qcow2", "old.qcow2", "2M");
            Io(dir, "old.qcow2", "write -P 5 0 2M");
            Img(dir, "create", "-q", "-f", "qcow2", "-b", "old.qcow2", "-F", "qcow2", "s.qcow2", "4M");
            Io(dir, "s.qcow2", "write -P 1 1M 64k");
            Img(dir, "create", "-q", "-f", "qcow2", "b.qcow2", "4M");
            Io(dir, "b.qcow2", "write -P 5 0 2M", "write -P 7 2M 2M");
        });
        sides.Same("convert", "-B", "b.qcow2", "-F", "qcow2", "-O", "qcow2", "s.qcow2", "v.qcow2");
        Qemu.AssertIdentical(Path.Combine(sides.MyDir, "s.qcow2"), Path.Combine(sides.MyDir, "v.qcow2"));
        Assert.Contains("\"start\": 0, \"length\": 1048576, \"depth\": 1,", Qemu.Img("map", "--output=json", Path.Combine(sides.MyDir, "v.qcow2")).Stdout);
    }

    [Theory]
    [InlineData("qcow2")]
    [InlineData("raw")]
    public void Convert_n_into_a_smaller_image_refuses_before_writing(string format)
    {
        using var sides = new SideBySide(dir =>
        {
            Img(dir, "create", "-q", "-f", "qcow2", "big.qcow2", "8M");
            Io(dir, "big.qcow2", "write -P 3 0 8M");
            Img(dir, "create", "-q", "-f", format, "small." + format, "4M");
        });
        sides.Same("convert", "-n", "-O", format, "big.qcow2", "small." + format);
        sides.AssertSameImage("small." + format);
        Assert.Contains("\"data\": false", Qemu.Img("map", "--output=json", "-f", format, Path.Combine(sides.MyDir, "small." + format)).Stdout);
    }

    [Fact]
    public void Convert_n_without_O_opens_the_target_as_raw()
    {
        using var sides = new SideBySide(dir =>
        {
            Img(dir, "create", "-q", "-f", "qcow2", "src.qcow2", "1M");
            Io(dir, "src.qcow2", "write -P 5 0 1M");
            Img(dir, "create", "-q", "-f", "qcow2", "small.qcow2", "1M");
            Img(dir, "create", "-q", "-f", "qcow2", "-o", "preallocation=full", "big.qcow2", "2M");
        });
        sides.Same("convert", "-n", "src.qcow2", "small.qcow2");
        sides.Same("convert", "-n", "src.qcow2", "big.qcow2");
        foreach (var name in new[] { "small.qcow2", "big.qcow2" })
        {
            sides.AssertSameFile(name);
            Assert.Equal(File.ReadAllBytes(Path.Combine(sides.TheirDir, name)), File.ReadAllBytes(Path.Combine(sides.MyDir, name)));
        }
    }
}
