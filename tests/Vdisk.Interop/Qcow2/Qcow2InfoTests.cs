using Vdisk.Interop.Support;
using Xunit;

namespace Vdisk.Interop.Qcow2;

/// <summary>vdisk info prints what qemu-img info prints, byte for byte, for qcow2 states beyond the plain image.</summary>
public class Qcow2InfoTests
{
    public static TheoryData<string> States => new() { "persistent bitmaps", "dirty (lazy refcounts)", "dirty with bitmaps" };

    private static string Make(TempDir dir, string state)
    {
        string img = dir.File("image.qcow2");
        bool lazy = state.Contains("dirty");
        Qemu.Ok(Qemu.Img("create", "-q", "-f", "qcow2", "-o", $"lazy_refcounts={(lazy ? "on" : "off")}", img, "4M"));
        if (state.Contains("bitmaps"))
        {
            Qemu.Ok(Qemu.Img("bitmap", "--add", img, "daily"));
            Qemu.Ok(Qemu.Img("bitmap", "--add", "-g", "128k", "--disable", img, "weekly-ünï"));
        }
        if (lazy)
        {
            // What a killed writer with lazy refcounts leaves behind: the dirty bit set.
            using var f = new FileStream(img, FileMode.Open, FileAccess.ReadWrite);
            f.Position = 79;
            f.WriteByte(0x01);
        }
        return img;
    }

    [Theory]
    [MemberData(nameof(States))]
    public void Info_matches_qemu_img_info(string state)
    {
        using var dir = new TempDir();
        string img = Make(dir, state);
        foreach (var output in new[] { "human", "json" })
        {
            var theirs = Qemu.Ok(Qemu.Img("info", $"--output={output}", img));
            var mine = Qemu.Ok(Qemu.Vdisk("info", $"--output={output}", img));
            Assert.Equal(theirs.Stdout, mine.Stdout);
        }
        var io = Qemu.Ok(Qemu.Io("-r", "-c", "info", img));
        var vdiskIo = Qemu.Ok(Qemu.Vdisk("io", "-r", "-c", "info", img));
        Assert.Equal(io.Stdout, vdiskIo.Stdout);
        if (state.Contains("dirty")) Assert.Contains("cleanly shut down: no\n", Qemu.Vdisk("info", img).Stdout);
        if (state.Contains("bitmaps")) Assert.Contains("            name: daily\n", Qemu.Vdisk("info", img).Stdout);
    }
}
