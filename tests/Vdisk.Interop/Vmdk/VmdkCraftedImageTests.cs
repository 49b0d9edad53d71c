using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;
using Vdisk.Interop.Support;
using Xunit;
using static Vdisk.Interop.Support.Qemu;
using static Vdisk.Interop.Vmdk.VmdkSideBySide;

namespace Vdisk.Interop.Vmdk;

/// <summary>
/// vmdk layouts qemu-img does not write but QEMU opens: a stream-optimized file as VMware
/// writes it into OVAs (grain tables and directory after the grains, the header's directory
/// offset "at end" and the real one in a footer), and an ESX sparse (COWD) extent. Built here
/// byte by byte from VMware's Virtual Disk Format 5.0; vdisk must read them as qemu-img does.
/// </summary>
public class VmdkCraftedImageTests
{
    private const int Sector = 512;

    /// <summary>Guest data for a 4 MiB disk: some grains patterned, one random, the rest zero.</summary>
    private static byte[] GuestData()
    {
        var data = new byte[4 << 20];
        data.AsSpan(0, 65536).Fill(0x11);
        data.AsSpan(3 * 65536 + 100, 5000).Fill(0x22);
        new Random(99).NextBytes(data.AsSpan(40 * 65536, 65536));
        data.AsSpan((4 << 20) - 65536).Fill(0x33);
        return data;
    }

    private static byte[] Zlib(ReadOnlySpan<byte> data)
    {
        using var output = new MemoryStream();
        using (var z = new ZLibStream(output, CompressionLevel.Optimal, leaveOpen: true)) z.Write(data);
        return output.ToArray();
    }

    private static byte[] Header(uint version, uint flags, ulong capacity, ulong descOffset, ulong descSize, ulong gdOffset, ulong grainOffset)
    {
        var h = new byte[Sector];
        "KDMV"u8.CopyTo(h);
        BinaryPrimitives.WriteUInt32LittleEndian(h.AsSpan(4), version);
        BinaryPrimitives.WriteUInt32LittleEndian(h.AsSpan(8), flags);
        BinaryPrimitives.WriteUInt64LittleEndian(h.AsSpan(12), capacity);
        BinaryPrimitives.WriteUInt64LittleEndian(h.AsSpan(20), 128);
        BinaryPrimitives.WriteUInt64LittleEndian(h.AsSpan(28), descOffset);
        BinaryPrimitives.WriteUInt64LittleEndian(h.AsSpan(36), descSize);
        BinaryPrimitives.WriteUInt32LittleEndian(h.AsSpan(44), 512);
        BinaryPrimitives.WriteUInt64LittleEndian(h.AsSpan(56), gdOffset);
        BinaryPrimitives.WriteUInt64LittleEndian(h.AsSpan(64), grainOffset);
        h[73] = 0x0a; h[74] = 0x20; h[75] = 0x0d; h[76] = 0x0a;
        BinaryPrimitives.WriteUInt16LittleEndian(h.AsSpan(77), 1);
        return h;
    }

    private static byte[] Marker(ulong value, uint size, uint type)
    {
        var m = new byte[Sector];
        BinaryPrimitives.WriteUInt64LittleEndian(m, value);
        BinaryPrimitives.WriteUInt32LittleEndian(m.AsSpan(8), size);
        BinaryPrimitives.WriteUInt32LittleEndian(m.AsSpan(12), type);
        return m;
    }

    /// <summary>A VMware stream: header (directory at end), descriptor, grains, table, directory, footer, end of stream.</summary>
    private static byte[] VmwareStream(byte[] guest)
    {
        const uint flags = 0x30001; // newline detect, compressed, markers
        ulong capacity = (ulong)guest.Length / Sector;
        var file = new MemoryStream();
        file.Write(Header(3, flags, capacity, 1, 1, ulong.MaxValue, 2));
        var desc = new byte[Sector];
        Encoding.ASCII.GetBytes("# Disk DescriptorFile\nversion=1\nCID=3f2a8b01\nparentCID=ffffffff\ncreateType=\"streamOptimized\"\n\n" +
            "# Extent description\nRW 8192 SPARSE \"generated-stream.vmdk\"\n\n# The Disk Data Base\n#DDB\n\nddb.adapterType = \"lsilogic\"\n").CopyTo(desc, 0);
        file.Write(desc);
        var table = new uint[512];
        for (int g = 0; g < guest.Length / 65536; g++)
        {
            var grain = guest.AsSpan(g * 65536, 65536);
            if (!grain.ContainsAnyExcept((byte)0)) continue;
            table[g] = (uint)(file.Position / Sector);
            var z = Zlib(grain);
            var head = new byte[12];
            BinaryPrimitives.WriteUInt64LittleEndian(head, (ulong)g * 128);
            BinaryPrimitives.WriteUInt32LittleEndian(head.AsSpan(8), (uint)z.Length);
            file.Write(head);
            file.Write(z);
            file.Write(new byte[(Sector - (12 + z.Length) % Sector) % Sector]);
        }
        file.Write(Marker(4, 0, 1));
        long tableSector = file.Position / Sector;
        foreach (uint e in table) file.Write(BitConverter.GetBytes(e));
        file.Write(Marker(1, 0, 2));
        long directorySector = file.Position / Sector;
        var directory = new byte[Sector];
        BinaryPrimitives.WriteUInt32LittleEndian(directory, (uint)tableSector);
        file.Write(directory);
        file.Write(Marker(1, 0, 3));
        file.Write(Header(3, flags, capacity, 1, 1, (ulong)directorySector, 2));
        file.Write(Marker(0, 0, 0));
        return file.ToArray();
    }

    [Fact]
    public void VmwareStreamWithFooter_ReadsAsQemu()
    {
        using var dir = new TempDir();
        string img = dir.File("generated-stream.vmdk");
        var guest = GuestData();
        File.WriteAllBytes(img, VmwareStream(guest));
        AssertSameGuestBytes(dir.Path, img);
        Ok(Img("convert", "-O", "raw", img, dir.File("out.raw")));
        Assert.True(File.ReadAllBytes(dir.File("out.raw")).AsSpan().SequenceEqual(guest), "the stream as built does not hold the guest data");
        AssertSame("info", img);
        AssertSame("info", "--output=json", img);
        AssertSame("map", "--output=json", img);
        AssertSame("check", img);
        AssertSame("io", "-r", "-c", "read -P 0x22 196708 5000", img);
    }

    [Fact]
    public void VmwareStreamWithABrokenFooter_IsRefusedAsQemu()
    {
        using var dir = new TempDir();
        string img = dir.File("generated-stream.vmdk");
        var bytes = VmwareStream(GuestData());
        bytes[bytes.Length - 1536 + 12] = 7; // footer marker type
        File.WriteAllBytes(img, bytes);
        AssertSame("info", img);
        File.WriteAllBytes(img, bytes.AsSpan(0, 1024).ToArray());
        AssertSame("info", "-f", "vmdk", img);
    }

    /// <summary>An ESX sparse extent: COWD header, a one-entry directory, one 4096-entry table, 4 KiB grains.</summary>
    private static byte[] Cowd(byte[] guest)
    {
        const int granularity = 8;
        var file = new byte[40 * Sector + guest.Length];
        "COWD"u8.CopyTo(file);
        BinaryPrimitives.WriteUInt32LittleEndian(file.AsSpan(4), 1);
        BinaryPrimitives.WriteUInt32LittleEndian(file.AsSpan(8), 3);
        BinaryPrimitives.WriteUInt32LittleEndian(file.AsSpan(12), (uint)(guest.Length / Sector));
        BinaryPrimitives.WriteUInt32LittleEndian(file.AsSpan(16), granularity);
        BinaryPrimitives.WriteUInt32LittleEndian(file.AsSpan(20), 4);
        BinaryPrimitives.WriteUInt32LittleEndian(file.AsSpan(24), 1);
        BinaryPrimitives.WriteUInt32LittleEndian(file.AsSpan(4 * Sector), 8);
        int next = 40;
        for (int g = 0; g < guest.Length / (granularity * Sector); g++)
        {
            var grain = guest.AsSpan(g * granularity * Sector, granularity * Sector);
            if (!grain.ContainsAnyExcept((byte)0)) continue;
            BinaryPrimitives.WriteUInt32LittleEndian(file.AsSpan(8 * Sector + g * 4), (uint)next);
            grain.CopyTo(file.AsSpan(next * Sector));
            next += granularity;
        }
        return file.AsSpan(0, next * Sector).ToArray();
    }

    [Fact]
    public void EsxSparseExtent_ReadsAndWritesAsQemu()
    {
        using var dir = new TempDir();
        var guest = GuestData();
        foreach (var name in new[] { "theirs", "mine" })
        {
            File.WriteAllBytes(dir.File($"{name}-delta.vmdk"), Cowd(guest));
            File.WriteAllText(dir.File($"{name}.vmdk"),
                $"# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"vmfsSparse\"\n\n# Extent description\nRW 8192 VMFSSPARSE \"{name}-delta.vmdk\"\n");
        }
        string theirs = dir.File("theirs.vmdk"), mine = dir.File("mine.vmdk");
        AssertSameGuestBytes(dir.Path, theirs);
        AssertSame("info", theirs);
        AssertSame("info", "--output=json", theirs);
        AssertSame("map", "--output=json", theirs);
        AssertSame("check", theirs);
        var ops = Commands(["write -P 0x44 8k 4k", "write -P 0x55 6k 1k", "write -P 0x66 1M 100k"]);
        Ok(Io([.. ops, "-f", "vmdk", theirs]));
        Ok(VdiskRun(["io", .. ops, "-f", "vmdk", mine]));
        AssertIdentical(mine, theirs);
        Assert.Equal(Img("map", "--output=json", theirs).Stdout.Replace("theirs", "X"), Img("map", "--output=json", mine).Stdout.Replace("mine", "X"));
    }
}
