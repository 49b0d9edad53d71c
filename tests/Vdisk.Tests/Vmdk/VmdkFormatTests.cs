using System.IO.Compression;
using CsCheck;
using Vdisk.Drivers.Vmdk;
using Xunit;

namespace Vdisk.Tests.Vmdk;

/// <summary>The sparse header layout of new extents, and compressed grains.</summary>
public class VmdkFormatTests
{
    [Theory]
    // 1 MiB: one grain table; the values are those qemu-img 7.2 writes (rgd 21, gd 26, grains at 128).
    [InlineData(1L << 20, 21UL, 26UL, 128UL)]
    // 100 MiB: four tables (the directories at 21 and 38 as in qemu-img's strace: 10752 and 19456 bytes).
    [InlineData(100L << 20, 21UL, 38UL, 128UL)]
    // 3 GiB: 96 tables of 4 sectors; both directories and their tables fit below sector 896.
    [InlineData(3L << 30, 21UL, 406UL, 896UL)]
    public void NewExtent_LaysOutMetadataAsQemu(long bytes, ulong rgd, ulong gd, ulong grains)
    {
        var h = VmdkSparseHeader.ForNewExtent(bytes, compressed: false, zeroedGrain: false);
        Assert.Equal((rgd, gd, grains), (h.RedundantGrainDirectoryOffset, h.GrainDirectoryOffset, h.GrainOffset));
        Assert.Equal(1u, h.Version);
        Assert.Equal(VmdkSparseHeader.FlagNewlineDetect | VmdkSparseHeader.FlagRedundantGrainDirectory, h.Flags);
    }

    [Fact]
    public void NewExtent_StreamOptimizedIsVersion3WithMarkersAndDeflate()
    {
        var h = VmdkSparseHeader.ForNewExtent(1 << 20, compressed: true, zeroedGrain: false);
        var bytes = h.Serialize();
        // The first 80 bytes of the header qemu-img 7.2 wrote for a 1 MiB streamOptimized image.
        Assert.Equal(Convert.FromHexString(
            "4B444D560300000003000300000800000000000080000000000000000100000000000000" +
            "1400000000000000000200001500000000000000" + "1A000000000000008000000000000000000A200D0A0100"),
            bytes.AsSpan(0, 79).ToArray());
        var parsed = VmdkSparseHeader.Parse(bytes);
        Assert.True(parsed.IsCompressed);
        Assert.Equal(h.GrainDirectoryOffset, parsed.GrainDirectoryOffset);
    }

    [Fact]
    public void NewExtent_ZeroedGrainIsVersion2()
    {
        var h = VmdkSparseHeader.ForNewExtent(1 << 20, compressed: false, zeroedGrain: true);
        Assert.Equal(2u, h.Version);
        Assert.NotEqual(0u, h.Flags & VmdkSparseHeader.FlagZeroGrain);
    }

    [Fact]
    public void Grains_RoundTripThroughTheMarker()
    {
        Gen.Byte[0, 3].Array[1, 65536].Sample(grain =>
        {
            var stored = VmdkGrainCodec.WithMarker(7, VmdkGrainCodec.Deflate(grain), 65536);
            var padded = new byte[131072];
            stored.CopyTo(padded, 0);
            var output = new byte[65536];
            int n = VmdkGrainCodec.Decompress(padded, padded.Length, hasMarker: true, output);
            Assert.Equal(grain.Length, n);
            Assert.True(output.AsSpan(0, n).SequenceEqual(grain));
        });
    }

    [Fact]
    public void Grains_ThatZlibRefusesAreErrors()
    {
        var grain = new byte[65536];
        new Random(7).NextBytes(grain.AsSpan(0, 1000));
        var z = VmdkGrainCodec.Deflate(grain);
        var output = new byte[65536];
        // Cut short: zlib's uncompress says Z_BUF_ERROR.
        Assert.Equal(-1, VmdkGrainCodec.Inflate(z, 0, z.Length - 5, output));
        // Corrupt checksum.
        var bad = (byte[])z.Clone();
        bad[^1] ^= 0xff;
        Assert.Equal(-1, VmdkGrainCodec.Inflate(bad, 0, bad.Length, output));
        // More than a grain.
        Assert.Equal(-1, VmdkGrainCodec.Inflate(z, 0, z.Length, new byte[4096]));
        // Raw deflate without the zlib header (what qcow2 stores) is not what vmdk stores.
        using var raw = new MemoryStream();
        using (var d = new DeflateStream(raw, CompressionLevel.Optimal, leaveOpen: true)) d.Write(grain);
        Assert.Equal(-1, VmdkGrainCodec.Inflate(raw.ToArray(), 0, (int)raw.Length, output));
        Assert.Equal(grain.Length, VmdkGrainCodec.Inflate(z, 0, z.Length, output));
    }

    [Fact]
    public void Grains_WithAnEmptyOrOversizedMarkerAreErrors()
    {
        var stored = new byte[131072];
        var output = new byte[65536];
        Assert.Equal(-1, VmdkGrainCodec.Decompress(stored, stored.Length, hasMarker: true, output));
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(stored.AsSpan(8), 131073);
        Assert.Equal(-1, VmdkGrainCodec.Decompress(stored, stored.Length, hasMarker: true, output));
    }

    [Fact]
    public void CreateOptions_PrintAsQemuImgDoes()
    {
        var a = new CreateOptions("x.vmdk", "vmdk");
        Assert.Null(a.Options.Set("size", "1048576000"));
        Assert.Null(a.Options.Set("toolsversion", "11"));
        Assert.Null(a.Options.Set("hwversion", "7"));
        Assert.Null(a.Options.Set("adapter_type", "lsilogic"));
        Assert.Equal("size=1048576000 adapter_type=lsilogic compat6=off hwversion=7 toolsversion=11", a.Options.Print());
        Assert.Equal("Invalid parameter 'cluster_size'", a.Options.Set("cluster_size", "64k")?.Message);
        Assert.Equal("Parameter 'zeroed_grain' expects 'on' or 'off'", a.Options.Set("zeroed_grain", "maybe")?.Message);
    }

    [Theory]
    [InlineData("disk.vmdk", "", "disk", ".vmdk")]
    [InlineData("/a/b.c/disk", "/a/b.c/", "disk", "")]
    [InlineData("dir/x.y.vmdk", "dir/", "x.y", ".vmdk")]
    public void Filenames_DecomposeForExtentNames(string name, string dir, string prefix, string postfix) =>
        Assert.Equal((dir, prefix, postfix), VmdkCreator.Decompose(name));
}
