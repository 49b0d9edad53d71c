using CsCheck;
using Vdisk.Drivers.Qcow2;
using Vdisk.Output;
using Vdisk.TestSupport;
using Xunit;

namespace Vdisk.Tests.Qcow2;

public class Qcow2FormatTests
{
    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(5)]
    [InlineData(6)]
    public void Refcounts_of_every_width_round_trip_without_touching_neighbours(int order)
    {
        var g = new Qcow2Geometry(9, order);
        ulong max = g.RefcountMax;
        // The block's old contents come from the generator too, so a failure is reproducible from CsCheck's seed.
        Gen.Select(Gen.Byte.Array[512], Gen.Int[0, (int)g.RefcountBlockEntries - 1], Gen.ULong).Sample((original, index, raw) =>
        {
            var block = (byte[])original.Clone();
            var before = Enumerable.Range(0, (int)g.RefcountBlockEntries).Select(i => RefcountCodec.Get(block, i, order)).ToArray();
            ulong value = order == 6 ? raw : raw % (max + 1);
            RefcountCodec.Set(block, index, order, value);
            Assert.Equal(value, RefcountCodec.Get(block, index, order));
            for (int i = 0; i < before.Length; i++)
                if (i != index) Assert.Equal(before[i], RefcountCodec.Get(block, i, order));
        }, iter: 200);
    }

    [Fact]
    public void Sixteen_bit_refcounts_are_big_endian()
    {
        var block = new byte[8];
        RefcountCodec.Set(block, 1, 4, 0x1234);
        Assert.Equal(new byte[] { 0, 0, 0x12, 0x34, 0, 0, 0, 0 }, block);
    }

    [Fact]
    public void One_bit_refcounts_start_at_the_least_significant_bit()
    {
        var block = new byte[2];
        RefcountCodec.Set(block, 0, 0, 1);
        RefcountCodec.Set(block, 9, 0, 1);
        Assert.Equal(new byte[] { 0x01, 0x02 }, block);
    }

    [Fact]
    public void L2_entries_decode_every_kind()
    {
        var g = new Qcow2Geometry(16, 4);
        Assert.Equal(Qcow2ClusterKind.Unallocated, new L2Entry(0).Kind);
        Assert.Equal(Qcow2ClusterKind.ZeroPlain, new L2Entry(1).Kind);
        Assert.Equal(Qcow2ClusterKind.ZeroAllocated, new L2Entry(0x50000 | 1).Kind);
        var normal = new L2Entry(0x8000000000050000);
        Assert.Equal(Qcow2ClusterKind.Normal, normal.Kind);
        Assert.True(normal.IsCopied);
        Assert.Equal(0x50000, normal.HostOffset);
        var compressed = L2Entry.CompressedAt(g, 0x30123, 1000);
        Assert.Equal(Qcow2ClusterKind.Compressed, compressed.Kind);
        Assert.Equal(0x30123, compressed.CompressedHostOffset(g));
        Assert.Equal(3, compressed.CompressedSectors(g)); // 0x30123..0x3050a touches sectors 0x180..0x182
        Assert.Equal((0x30000L, 1536L), compressed.CompressedHostRange(g));
    }

    [Fact]
    public void Compressed_entry_field_split_follows_the_cluster_size()
    {
        Assert.Equal(54, new Qcow2Geometry(16, 4).CompressedSizeShift);
        Assert.Equal(61, new Qcow2Geometry(9, 4).CompressedSizeShift);
        Assert.Equal(49, new Qcow2Geometry(21, 4).CompressedSizeShift);
    }

    [Theory]
    [InlineData(16, 64L << 20, 1)]
    [InlineData(16, 1L << 30, 2)]
    [InlineData(9, 1L << 20, 32)]
    [InlineData(21, 1L << 40, 2)]
    public void L1_size_covers_the_virtual_size(int clusterBits, long size, long expected)
    {
        Assert.Equal(expected, new Qcow2Geometry(clusterBits, 4).L1EntriesFor(size));
    }

    [Fact]
    public void Header_round_trips_with_backing_extensions_and_unknown_fields()
    {
        var h = new Qcow2Header { Size = 1 << 30, L1Size = 2, L1TableOffset = 0x30000, RefcountTableOffset = 0x10000, RefcountTableClusters = 1, BackingFile = "base.qcow2" };
        h.BackingFormat = "qcow2";
        h.Extensions.Add(new Qcow2HeaderExtension(0x12345678, [1, 2, 3]));
        var bytes = h.Serialize();
        var back = Qcow2Header.Parse(bytes);
        Assert.Equal("base.qcow2", back.BackingFile);
        Assert.Equal("qcow2", back.BackingFormat);
        Assert.Equal(1UL << 30, back.Size);
        Assert.Contains(back.Extensions, e => e.Type == 0x12345678 && e.Data.SequenceEqual(new byte[] { 1, 2, 3 }));
        Assert.Equal(0x70u, back.HeaderLength);
        Assert.Equal(bytes, back.Serialize());
    }

    /// <summary>
    /// Opening reads the first 4 KiB of cluster 0 and the rest only when <see cref="Qcow2Header.BytesToRead"/>
    /// says the header area runs further: whatever the extensions, backing name and damage, the
    /// header parsed from what was read is the one parsed from the whole cluster (or both are refused
    /// with the same message).
    /// </summary>
    [Fact]
    public void The_header_area_read_first_parses_as_the_whole_cluster()
    {
        var extension = Gen.Select(Gen.UInt[0x10000000, 0x7fffffff], Gen.Int[0, 2500]);
        Gen.Select(Gen.Int[12, 16], extension.List[0, 4], Gen.Int[0, 1023], Gen.Select(Gen.Int[0, 16383], Gen.Byte).Array[0, 3])
            .Where((bits, extensions, backingLength, _) => extensions.Sum(e => e.Item2 + 16) + backingLength + 1024 < (1 << bits))
            .Sample((bits, extensions, backingLength, damage) =>
            {
                var h = new Qcow2Header { Size = 1 << 30, ClusterBits = bits, L1Size = 2, L1TableOffset = 0x30000, RefcountTableOffset = 0x10000, RefcountTableClusters = 1 };
                if (backingLength > 0) h.BackingFile = new string('b', backingLength);
                foreach (var (type, length) in extensions) h.Extensions.Add(new Qcow2HeaderExtension(type, Enumerable.Repeat((byte)0xa5, length).ToArray()));
                var cluster = h.Serialize();
                foreach (var (offset, value) in damage)
                    if (offset < cluster.Length) cluster[offset] = value;

                var prefix = new byte[Qcow2Header.HeaderAreaPrefix];
                cluster.AsSpan(0, Math.Min(cluster.Length, prefix.Length)).CopyTo(prefix);
                int needed = Qcow2Header.BytesToRead(prefix);
                var read = needed <= prefix.Length ? prefix : cluster[..needed];
                Assert.Equal(Describe(() => Qcow2Header.Parse(cluster)), Describe(() => Qcow2Header.Parse(read)));
            });

        static string Describe(Func<Qcow2Header> parse)
        {
            try
            {
                var h = parse();
                return $"{h.Version} {h.HeaderLength} {h.BackingFile} {h.BackingFormat} " +
                    string.Join(",", h.Extensions.Select(e => $"{e.Type:x}:{Convert.ToHexString(e.Data)}")) +
                    (h.UnknownHeaderFields is { } u ? Convert.ToHexString(u) : "");
            }
            catch (Qcow2FormatException e)
            {
                return "refused: " + e.Message;
            }
        }
    }

    /// <summary>QEMU keeps the last backing format extension it reads (iotest 114 appends a second one) and writes one back.</summary>
    [Fact]
    public void The_last_backing_format_extension_wins_and_only_it_is_written_back()
    {
        var h = new Qcow2Header { Size = 1 << 20, BackingFile = "base.qcow2" };
        h.Extensions.Add(new Qcow2HeaderExtension(Qcow2Header.ExtensionBackingFormat, "qcow2"u8.ToArray()));
        h.Extensions.Add(new Qcow2HeaderExtension(Qcow2Header.ExtensionBackingFormat, "foo"u8.ToArray()));
        var back = Qcow2Header.Parse(h.Serialize());
        Assert.Equal("foo", back.BackingFormat);
        Assert.Single(Qcow2Header.Parse(back.Serialize()).Extensions, e => e.Type == Qcow2Header.ExtensionBackingFormat);
    }

    [Theory]
    [InlineData(0, 0x12345678u, "Image is not in qcow2 format")]
    [InlineData(4, 7u, "Unsupported qcow2 version 7")]
    [InlineData(20, 8u, "Unsupported cluster size: 2^8")]
    [InlineData(20, 22u, "Unsupported cluster size: 2^22")]
    [InlineData(100, 50u, "qcow2 header too short")]
    [InlineData(96, 7u, "Reference count entry width too large; may not exceed 64 bits")]
    public void Bad_headers_give_qemus_message(int offset, uint value, string message)
    {
        var bytes = new Qcow2Header { Size = 1 << 20 }.Serialize();
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(bytes.AsSpan(offset), value);
        var e = Assert.Throws<Qcow2FormatException>(() => Qcow2Header.Parse(bytes));
        Assert.Equal(message, e.Message);
    }

    [Fact]
    public void Unknown_incompatible_bits_are_refused_by_name_or_number()
    {
        var bytes = new Qcow2Header { Size = 1 << 20, IncompatibleFeatures = 1UL << 40 }.Serialize();
        var e = Assert.Throws<Qcow2FormatException>(() => Qcow2Header.Parse(bytes));
        Assert.Equal("Unsupported qcow2 feature(s): Unknown incompatible feature: 10000000000", e.Message);
    }

    /// <summary>iotest 036 adds a feature table of one short entry (14 bytes); QEMU still names the bit from it.</summary>
    [Fact]
    public void A_short_feature_table_entry_still_names_the_unknown_bit()
    {
        // Clusters of 4 KiB leave vdisk's own table out; the one extension is then re-typed as the table.
        var h = new Qcow2Header { Size = 1 << 20, Version = 3, ClusterBits = 12, IncompatibleFeatures = 1UL << 63 };
        h.Extensions.Add(new Qcow2HeaderExtension(0x12345678, [0, 63, .. "Test feature"u8]));
        var bytes = h.Serialize();
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(bytes.AsSpan((int)h.HeaderLength), Qcow2Header.ExtensionFeatureTable);
        var e = Assert.Throws<Qcow2FormatException>(() => Qcow2Header.Parse(bytes));
        Assert.Equal("Unsupported qcow2 feature(s): Test feature", e.Message);
    }

    [Fact]
    public void Json_object_prints_keys_in_qemus_qdict_order()
    {
        var o = new QemuJsonObject().Add("filename", "a").Add("format", "qcow2").Add("dirty-flag", false)
            .Add("actual-size", 1L).Add("virtual-size", 2L).Add("cluster-size", 3L);
        var keys = o.OrderedMembers.Select(m => m.Key).ToArray();
        Assert.Equal(new[] { "virtual-size", "filename", "cluster-size", "format", "actual-size", "dirty-flag" }, keys);
        Assert.Equal("{\n    \"required\": 1\n}", new QemuJsonObject().Add("required", 1L).ToPrettyJson());
    }

    [Fact]
    public void Measure_arithmetic_matches_qemu_img_for_one_gibibyte()
    {
        long fully = Qcow2Measure.PreallocSize(1L << 30, 65536, 4);
        Assert.Equal(1074135040, fully);
    }

    [Fact]
    public void Relative_backing_names_resolve_against_the_image_directory()
    {
        Assert.Equal("dir/base.qcow2", Vdisk.Graph.BackingPath.Combine("dir/top.qcow2", "base.qcow2"));
        Assert.Equal("base.qcow2", Vdisk.Graph.BackingPath.Combine("top.qcow2", "base.qcow2"));
        Assert.Equal("/abs/base.qcow2", Vdisk.Graph.BackingPath.Combine("dir/top.qcow2", "/abs/base.qcow2"));
        Assert.Equal("nbd://h/x", Vdisk.Graph.BackingPath.Combine("dir/top.qcow2", "nbd://h/x"));
    }

    [Fact]
    public void Compression_round_trips_deflate_and_zstd_and_refuses_incompressible_data()
    {
        var cluster = new byte[65536];
        for (int i = 0; i < cluster.Length; i++) cluster[i] = (byte)(i / 100);
        foreach (var type in new[] { Qcow2CompressionType.Zlib, Qcow2CompressionType.Zstd })
        {
            var packed = Qcow2Compression.Compress(type, cluster)!;
            var padded = new byte[(packed.Length + 511) / 512 * 512 + 512];
            packed.CopyTo(padded, 0);
            var output = new byte[65536];
            Assert.True(Qcow2Compression.TryDecompress(type, padded, output));
            Assert.Equal(cluster, output);
        }
        var random = DeterministicData.Bytes(65536, "incompressible cluster");
        Assert.Null(Qcow2Compression.Compress(Qcow2CompressionType.Zlib, random));
        Assert.False(Qcow2Compression.TryDecompress(Qcow2CompressionType.Zlib, random.AsSpan(0, 100), new byte[65536]));
    }
}
