using Vdisk.Interop.Support;
using Vdisk.TestSupport;
using Xunit;
using static Vdisk.Interop.Support.FormatCompat;

namespace Vdisk.Interop.Bochs;

/// <summary>
/// Bochs images (built byte by byte: nothing packaged here writes them) read through vdisk as
/// through QEMU 7.2: the same bytes, the same info, map, check and measure output, the same
/// refusals (read-write opens, creation, damaged headers), and the same lock bytes when held.
/// </summary>
public class BochsInteropTests
{
    /// <summary>Extents 0..6 of 4 KiB (the last one cut short by the disk size), placed out of order, sectors partly written; extents 2 and 5 unwritten.</summary>
    private static string Make(TempDir dir, uint version = 0x00020000, string name = "disk.bochs")
    {
        var (file, _) = new BochsImage
        {
            Version = version,
            ExtentSize = 4096,
            DiskSize = 6 * 4096 + 1536,
            CatalogEntries = 8,
            Slots = [4, 0, 6, 1, 3],
            Written = (extent, sector) => (extent + sector) % 3 != 0,
        }.Build();
        string path = dir.File(name);
        File.WriteAllBytes(path, file);
        return path;
    }

    [Theory]
    [InlineData(0x00020000u)]
    [InlineData(0x00010000u)]
    public void Images_read_back_as_qemu_reads_them(uint version)
    {
        using var dir = new TempDir();
        string img = Make(dir, version);
        SameContent(dir, img, "bochs");
        SameContent(dir, img);
        SameInfoAndMap(img, "bochs");
        SameInfoAndMap(img);
        // Unaligned reads across written and unwritten sectors, extents and the disk's end.
        foreach (var read in new[] { "read -v -q 0 1024", "read -v -q 1000 3000", "read -v -q 8000 9000", "read -v -q 20000 7000", "read -v -q 25000 1000" })
            Same(true, "-r", "-f", "bochs", "-c", read, img);
        Same(false, "check", "-f", "bochs", img);
        Same(false, "measure", "-O", "qcow2", img);
        Same(false, "snapshot", "-l", img);
    }

    [Fact]
    public void Read_write_opens_and_creation_are_refused_as_qemu_refuses_them()
    {
        using var dir = new TempDir();
        string img = Make(dir);
        Same(true, "-f", "bochs", "-c", "read 0 512", img);
        Same(true, "-c", "write 0 512", img);
        Same(false, "resize", "-f", "bochs", img, "1M");
        Same(false, "amend", "-f", "bochs", "-o", "size=1M", img);
        Same(false, "create", "-f", "bochs", dir.File("new.bochs"), "1M");
        Same(false, "convert", "-O", "bochs", img, dir.File("copy.bochs"));
        Assert.False(File.Exists(dir.File("copy.bochs")));
    }

    [Fact]
    public void With_auto_read_only_the_node_opens_read_only_and_a_writer_is_refused_by_the_node()
    {
        using var dir = new TempDir();
        string img = Make(dir);
        string opts = $"driver=bochs,auto-read-only=on,file.driver=file,file.filename={img}";
        var q = Qemu.Io("--image-opts", opts, "-c", "read -q 0 512");
        var r = Qemu.Vdisk("io", "--image-opts", opts, "-c", "read -q 0 512");
        AssertSame(q, r);
        // The node became read-only, so qemu-io's read-write BlockBackend is what refuses now.
        Assert.Equal("vdisk: can't open: Block node is read-only\n", r.Stderr);
    }

    public static TheoryData<string, int, byte[]> Damage => new()
    {
        // iotest 078's cases, and a few more of bochs_open's checks.
        { "negative catalog size", 0x48, [0xff, 0xff, 0xff, 0xff] },
        { "catalog size overflows when multiplied", 0x48, [0, 0, 0, 0x40] },
        { "catalog too small for the disk", 0x58, [0, 0xc0, 0x0f, 0, 0, 0, 0, 0x7f] },
        { "negative extent size", 0x50, [0, 0, 0, 0x80] },
        { "zero extent size", 0x50, [0, 0, 0, 0] },
        { "extent size not a power of two", 0x50, [0, 0x18, 0, 0] },
        { "unknown version", 0x40, [0, 0, 3, 0] },
        { "subtype not Growing", 48, "Undoable"u8.ToArray() },
        { "catalog beyond the end of the file", 0x44, [0, 0, 0, 1] },
        { "bitmap size zero", 0x4c, [0, 0, 0, 0] },
    };

    [Theory]
    [MemberData(nameof(Damage))]
    public void Damaged_headers_give_qemus_errors(string damage, int at, byte[] bytes)
    {
        using var dir = new TempDir();
        string img = Make(dir, name: damage.Replace(' ', '-') + ".bochs");
        Patch(img, at, bytes);
        Same(true, "-r", "-f", "bochs", "-c", "read -v -q 0 1024", img);
        Same(true, "-r", "-c", "read -q 4k 4k", img);
        Same(false, "info", img);
        Same(false, "map", "--output=json", "-f", "bochs", img);
    }

    [Theory]
    [InlineData("-r")]
    [InlineData("-r -U")]
    public void A_reader_holds_qemus_lock_bytes_and_openers_get_qemus_outcome(string flags)
    {
        using var dir = new TempDir();
        string img = Make(dir);
        string[] args = [.. flags.Split(' '), "-f", "bochs", img, "-c", "sleep 60000"];
        string qemu, vdisk;
        using (var q = Holder.Start(img, "qemu-io", args)) qemu = LockBytesHeld.Describe(LockBytesHeld.Read(q.Pid, img));
        using (var v = Holder.Start(img, Programs.Vdisk, ["io", .. args])) vdisk = LockBytesHeld.Describe(LockBytesHeld.Read(v.Pid, img));
        Assert.Equal(qemu, vdisk);

        foreach (var holder in new[] { "qemu-io", Programs.Vdisk })
        {
            using var h = Holder.Start(img, holder, holder == "qemu-io" ? args : ["io", .. args]);
            // A second reader, and a writer of the file as raw, against each holder.
            Same(true, "-r", "-f", "bochs", "-c", "read -q 0 4k", img);
            Same(true, "-f", "raw", "-c", "write -q 1M 512", img);
            Same(false, "info", img);
        }
    }
}
