using System.Buffers.Binary;
using Vdisk.Interop.Support;
using Xunit;
using static Vdisk.Interop.Support.FormatCompat;
using static Vdisk.Interop.Support.Qemu;

namespace Vdisk.Interop.Vdi;

/// <summary>
/// VDI images made by qemu-img and written by qemu-io read back through vdisk as through QEMU:
/// the same bytes, info, map and check output, and the same errors for damaged images.
/// </summary>
public class VdiReadTests
{
    public static TheoryData<string, string> Images => new()
    {
        { "", "20M" },
        { "static=on", "20M" },
        { "static=off", "1000001" },
        { "static=on", "1000001" },
        { "", "0" },
    };

    private static string[] WritesFor(string size) => size switch
    {
        "0" => [],
        "1000001" => ["write -P 0x11 0 1k", "write -P 0x33 1000 3000", "write -P 0x44 900k 64k"],
        _ => ["write -P 0x11 0 1k", "write -P 0x22 3M 5M", "write -P 0x33 1000 3000", "write -z 9M 100k", "write -P 0x44 19M 1M"],
    };

    [Theory]
    [MemberData(nameof(Images))]
    public void Images_made_by_qemu_img_read_back_the_same(string options, string size)
    {
        using var dir = new TempDir();
        var writes = WritesFor(size);
        string img = Make(dir, "disk.vdi", "vdi", options, size, writes);
        SameInfoAndMap(img);
        SameContent(dir, img);
        foreach (var output in new[] { "human", "json" }) Same(false, "check", $"--output={output}", img);
        foreach (var w in writes.Where(w => w.Contains("-P")))
            Same(true, "-r", "-c", w.Replace("write", "read -q"), img);
    }

    [Fact]
    public void Check_cannot_repair_a_vdi()
    {
        using var dir = new TempDir();
        string img = Make(dir, "disk.vdi", "vdi", "", "4M", "write 0 64k");
        Same(false, "check", "-r", "leaks", img);
        Same(false, "check", "-r", "all", img);
    }

    /// <summary>The block map entries start at 0x200 in images qemu-img makes.</summary>
    private static void SetEntry(string img, int index, uint value)
    {
        var b = new byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(b, value);
        Patch(img, 0x200 + index * 4, b);
    }

    private static void SetU32(string img, int at, uint value)
    {
        var b = new byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(b, value);
        Patch(img, at, b);
    }

    public static TheoryData<string> Damage => new()
    {
        "signature", "version 1.0", "block map offset unaligned", "data offset unaligned", "sector size 4096", "block size 2M",
        "disk larger than the map", "link uuid", "parent uuid", "too many blocks", "larger than the maximum",
        "odd disk size", "two blocks share data", "entry past the map", "allocated count wrong", "discarded entry",
    };

    [Theory]
    [MemberData(nameof(Damage))]
    public void Damaged_images_give_qemus_errors_and_check_results(string damage)
    {
        using var dir = new TempDir();
        string img = Make(dir, "bad.vdi", "vdi", "", "8M", "write -P 0x61 0 64k", "write -P 0x62 2M 64k", "write -P 0x63 5M 64k");
        switch (damage)
        {
            case "signature": SetU32(img, 0x40, 0xbeda1070); break;
            case "version 1.0": SetU32(img, 0x44, 0x00010000); break;
            case "block map offset unaligned": SetU32(img, 0x154, 0x201); break;
            case "data offset unaligned": SetU32(img, 0x158, 0x401); break;
            case "sector size 4096": SetU32(img, 0x168, 4096); break;
            case "block size 2M": SetU32(img, 0x178, 2 << 20); break;
            case "disk larger than the map": SetU32(img, 0x170, 9 << 20); break;
            case "link uuid": Patch(img, 0x1a8, [1]); break;
            case "parent uuid": Patch(img, 0x1b8, [1]); break;
            case "too many blocks": SetU32(img, 0x180, 0xfffffff0); break;
            case "larger than the maximum": Patch(img, 0x170, [0, 0, 0, 0, 0, 0, 0x10, 0]); break;
            case "odd disk size": SetU32(img, 0x170, (8 << 20) - 1000); break;
            case "two blocks share data": SetEntry(img, 5, 0); break;
            case "entry past the map": SetEntry(img, 2, 100); break;
            case "allocated count wrong": SetU32(img, 0x184, 7); break;
            case "discarded entry": SetEntry(img, 2, 0xfffffffe); break;
        }
        Same(false, "info", img);
        Same(false, "info", "--output=json", img);
        Same(false, "map", "--output=json", img);
        Same(false, "check", img);
        Same(false, "check", "--output=json", img);
        Same(true, "-c", "read -q 0 4k", img);
        Same(true, "-r", "-c", "read -q -P 0x63 5M 64k", img);
    }
}
