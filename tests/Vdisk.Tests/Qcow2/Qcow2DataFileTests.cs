using System.Buffers.Binary;
using System.Text;
using CsCheck;
using Vdisk.Drivers.Qcow2;
using Xunit;

namespace Vdisk.Tests.Qcow2;

/// <summary>The external data file in the qcow2 header: its extension, its feature bits, and offset 0 in L2 entries.</summary>
public class Qcow2DataFileTests
{
    private static Qcow2Header WithDataFile(string name, bool raw)
    {
        var h = new Qcow2Header { Size = 1 << 20, L1TableOffset = 0x30000, RefcountTableOffset = 0x10000, RefcountTableClusters = 1 };
        h.DataFile = name;
        h.IncompatibleFeatures |= Qcow2Features.IncompatDataFile;
        if (raw) h.AutoclearFeatures |= Qcow2Features.AutoclearDataFileRaw;
        return h;
    }

    [Fact]
    public void Data_file_name_and_bits_round_trip_through_cluster_0()
    {
        var parsed = Qcow2Header.Parse(WithDataFile("disk.raw", raw: true).Serialize());
        Assert.Equal("disk.raw", parsed.DataFile);
        Assert.True(parsed.HasDataFile);
        Assert.True(parsed.DataFileRaw);
        Assert.Equal(4UL, parsed.IncompatibleFeatures);
        Assert.Equal(2UL, parsed.AutoclearFeatures);
    }

    [Fact]
    public void Data_file_extension_follows_the_backing_format_and_precedes_the_feature_table()
    {
        var h = WithDataFile("d", raw: false);
        h.BackingFile = "base.qcow2";
        h.BackingFormat = "qcow2";
        var cluster0 = h.Serialize();
        // qcow2_update_header: backing format (8 + 8 bytes), then the data file name (8 + 1, padded to 8).
        int pos = Qcow2Header.V3HeaderLength;
        Assert.Equal(Qcow2Header.ExtensionBackingFormat, BinaryPrimitives.ReadUInt32BigEndian(cluster0.AsSpan(pos)));
        pos += 16;
        Assert.Equal(Qcow2Header.ExtensionDataFile, BinaryPrimitives.ReadUInt32BigEndian(cluster0.AsSpan(pos)));
        Assert.Equal(1u, BinaryPrimitives.ReadUInt32BigEndian(cluster0.AsSpan(pos + 4)));
        Assert.Equal((byte)'d', cluster0[pos + 8]);
        Assert.Equal(0, cluster0[pos + 9]);
        Assert.Equal(Qcow2Header.ExtensionFeatureTable, BinaryPrimitives.ReadUInt32BigEndian(cluster0.AsSpan(pos + 16)));
    }

    [Fact]
    public void The_last_data_file_extension_wins_and_only_it_is_written_back()
    {
        var h = WithDataFile("first", raw: false);
        h.Extensions.Add(new(0x12345678, [1, 2, 3]));
        h.Extensions.Add(new(Qcow2Header.ExtensionDataFile, Encoding.UTF8.GetBytes("second")));
        var parsed = Qcow2Header.Parse(h.Serialize());
        Assert.Equal("second", parsed.DataFile);
        Assert.Single(parsed.Extensions, e => e.Type == Qcow2Header.ExtensionDataFile);
        Assert.Contains(parsed.Extensions, e => e.Type == 0x12345678);
    }

    [Fact]
    public void Removing_the_name_drops_the_extension_but_keeps_the_bit()
    {
        var h = WithDataFile("d.raw", raw: false);
        h.DataFile = null;
        var parsed = Qcow2Header.Parse(h.Serialize());
        Assert.Null(parsed.DataFile);
        Assert.True(parsed.HasDataFile);
        Assert.DoesNotContain(parsed.Extensions, e => e.Type == Qcow2Header.ExtensionDataFile);
    }

    [Fact]
    public void Any_name_that_fits_round_trips()
    {
        Gen.String[Gen.Char['!', '~'], 1, 500].Sample(name =>
        {
            var parsed = Qcow2Header.Parse(WithDataFile(name, raw: false).Serialize());
            Assert.Equal(name, parsed.DataFile);
        }, iter: 200);
    }

    [Fact]
    public void The_data_file_bit_is_one_vdisk_opens_and_the_raw_bit_one_qemu_keeps()
    {
        Assert.Equal(1UL << 2, Qcow2Features.IncompatDataFile);
        Assert.NotEqual(0UL, Qcow2Features.IncompatSupported & Qcow2Features.IncompatDataFile);
        Assert.Equal(1UL << 1, Qcow2Features.AutoclearDataFileRaw);
        Assert.NotEqual(0UL, Qcow2Features.AutoclearKnownToQemu & Qcow2Features.AutoclearDataFileRaw);
        Assert.Contains(Qcow2Features.NameTable, f => f.Type == 0 && f.Bit == 2 && f.Name == "external data file");
        Assert.Contains(Qcow2Features.NameTable, f => f.Type == 2 && f.Bit == 1 && f.Name == "raw external data");
    }

    [Fact]
    public void Offset_0_with_COPIED_is_a_data_cluster_only_in_an_external_data_file()
    {
        var copiedAt0 = new L2Entry(L2Entry.CopiedFlag);
        Assert.Equal(Qcow2ClusterKind.Normal, copiedAt0.KindWith(externalDataFile: true));
        Assert.Equal(Qcow2ClusterKind.Unallocated, copiedAt0.KindWith(externalDataFile: false));
        Assert.Equal(Qcow2ClusterKind.Unallocated, new L2Entry(0).KindWith(externalDataFile: true));
        Assert.Equal(Qcow2ClusterKind.ZeroPlain, new L2Entry(L2Entry.CopiedFlag | L2Entry.ZeroFlag).KindWith(externalDataFile: true));
        Assert.Equal(Qcow2ClusterKind.Normal, new L2Entry(L2Entry.CopiedFlag | 0x10000).KindWith(externalDataFile: true));
    }
}
