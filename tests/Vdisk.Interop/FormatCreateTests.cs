using Vdisk.Interop.Support;
using Xunit;
using static Vdisk.Interop.Support.FormatCompat;
using static Vdisk.Interop.Support.Qemu;

namespace Vdisk.Interop;

/// <summary>
/// qemu-img create for vpc, vdi and vhdx through the driver's create callback: the same "Formatting"
/// line and errors as qemu-img, images that QEMU reads as it reads its own (info, check, compare),
/// and vdisk's writes to them read back by qemu-img.
/// </summary>
public class FormatCreateTests
{
    public static TheoryData<string, string, string> Cases => new()
    {
        { "vpc", "", "20M" },
        { "vpc", "subformat=fixed", "20M" },
        { "vpc", "force_size=on", "1000001" },
        { "vpc", "subformat=fixed,force_size=on", "3M" },
        { "vdi", "", "20M" },
        { "vdi", "static=on", "20M" },
        { "vdi", "static=off", "1000001" },
        { "vhdx", "", "20M" },
        { "vhdx", "subformat=fixed", "20M" },
        { "vhdx", "subformat=fixed", "1000001" },
        { "vhdx", "block_size=1M,log_size=3M", "100M" },
        { "vhdx", "block_size=0.5M,log_size=1.5M", "1000001" },
        { "vhdx", "block_size=512M", "20M" },
        { "vhdx", "block_state_zero=off", "20M" },
        { "vhdx", "subformat=fixed,block_state_zero=off,block_size=2M", "20M" },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void Create_MakesImagesQemuReadsAsItsOwn(string format, string options, string size)
    {
        using var dir = new TempDir();
        string q = dir.File("q." + format), v = dir.File("v." + format);
        string[] Args(string path) => options.Length == 0 ? ["create", "-f", format, path, size] : ["create", "-f", format, "-o", options, path, size];
        var theirs = Ok(Img(Args(q)));
        var mine = Ok(Qemu.Vdisk(Args(v)));
        Assert.Equal(theirs.Stdout.Replace(q, "IMG"), mine.Stdout.Replace(v, "IMG"));
        string Info(string path) => Ok(Img("info", "--output=json", "-f", format, path)).Stdout.Replace(path, "IMG");
        Assert.Equal(Info(q), Info(v));
        Assert.Equal(new FileInfo(q).Length, new FileInfo(v).Length);
        if (format != "vpc") Ok(Img("check", "-f", format, v));
        AssertIdentical(q, v, format, format);

        // Data vdisk writes into the new image reads back the same through QEMU.
        Ok(Qemu.Vdisk("io", "-f", format, v, "-c", "write -P 0x5a 512k 100k"));
        Ok(Io("-f", format, q, "-c", "write -P 0x5a 512k 100k"));
        if (format != "vpc") Ok(Img("check", "-f", format, v));
        AssertIdentical(q, v, format, format);
        Assert.Equal(new FileInfo(q).Length, new FileInfo(v).Length);
    }

    /// <summary>
    /// The extreme vhdx sizes (too large to compare by reading): for size 0 QEMU's BAT size
    /// computation wraps around to a 64 MiB table, and so does vdisk's; 64 TiB is the largest.
    /// </summary>
    [Theory]
    [InlineData("0")]
    [InlineData("64T")]
    public void Create_ExtremeVhdxSizesAreQemus(string size)
    {
        using var dir = new TempDir();
        string q = dir.File("q.vhdx"), v = dir.File("v.vhdx");
        Ok(Img("create", "-q", "-f", "vhdx", q, size));
        Ok(Qemu.Vdisk("create", "-q", "-f", "vhdx", v, size));
        Ok(Img("check", "-f", "vhdx", v));
        string Info(string path) => Ok(Img("info", "--output=json", path)).Stdout.Replace(path, "IMG");
        Assert.Equal(Info(q), Info(v));
        Assert.Equal(new FileInfo(q).Length, new FileInfo(v).Length);
    }

    [Theory]
    [InlineData("vpc", "subformat=sparse", "20M")]
    [InlineData("vpc", "", "3000G")]
    [InlineData("vpc", "force_size=maybe", "20M")]
    [InlineData("vdi", "static=maybe", "20M")]
    [InlineData("vdi", "", "2P")]
    [InlineData("vhdx", "subformat=differencing", "20M")]
    [InlineData("vhdx", "subformat=foo", "20M")]
    [InlineData("vhdx", "log_size=0", "20M")]
    [InlineData("vhdx", "log_size=5G", "20M")]
    [InlineData("vhdx", "block_size=3M", "20M")]
    [InlineData("vhdx", "block_state_zero=maybe", "20M")]
    [InlineData("vhdx", "", "65T")]
    [InlineData("vhdx", "help", "20M")]
    [InlineData("vpc", "help", "20M")]
    [InlineData("vdi", "help", "20M")]
    public void Create_RefusesAndHelpsAsQemuImg(string format, string options, string size)
    {
        using var dir = new TempDir();
        string q = dir.File("q." + format), v = dir.File("v." + format);
        string[] Args(string path) => options.Length == 0 ? ["create", "-f", format, path, size] : ["create", "-f", format, "-o", options, path, size];
        var theirs = Img(Args(q));
        var mine = Qemu.Vdisk(Args(v));
        Assert.Equal(theirs.ExitCode, mine.ExitCode);
        Assert.Equal(theirs.Stdout.Replace(q, "IMG"), mine.Stdout.Replace(v, "IMG"));
        Assert.Equal(theirs.Stderr.Replace(q, "IMG").Replace("qemu-img:", "vdisk:"), mine.Stderr.Replace(v, "IMG"));
        Assert.Equal(File.Exists(q), File.Exists(v));
    }
}
