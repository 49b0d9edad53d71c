using System.Text;
using Vdisk.Drivers.Vmdk;
using Vdisk.Graph;
using Xunit;

namespace Vdisk.Tests.Vmdk;

/// <summary>
/// The descriptor is read as QEMU 7.2 reads it (strstr and sscanf), quirks included, so that
/// vdisk opens exactly the images QEMU opens, with the same extents. Each expectation below was
/// checked against qemu-img 7.2 on the same text.
/// </summary>
public class VmdkDescriptorTests
{
    private static byte[] Text(string s) => Encoding.ASCII.GetBytes(s);

    [Theory]
    [InlineData("# Disk DescriptorFile\nversion=1\nCID=1\n")]
    [InlineData("version=3\r\n")]
    [InlineData("# comment\n   \n  \r\nversion=2\n")]
    public void Probe_AcceptsAVersionLineAfterCommentsAndBlankLines(string text) => Assert.True(VmdkDescriptor.Probe(Text(text)));

    [Theory]
    [InlineData("version=4\n")]
    [InlineData("CID=1\nversion=1\n")]
    [InlineData("  x\nversion=1\n")]
    [InlineData("version=1")]
    [InlineData("\nversion=1\n")]
    public void Probe_RefusesOtherText(string text) => Assert.False(VmdkDescriptor.Probe(Text(text)));

    [Fact]
    public void Probe_AcceptsBothSparseMagics()
    {
        Assert.True(VmdkDescriptor.Probe(Text("KDMV\x01\0\0\0")));
        Assert.True(VmdkDescriptor.Probe(Text("COWD\x01\0\0\0")));
        Assert.True(GraphOpener.LooksLikeOtherFormat(Text("KDMV\x01\0\0\0")));
    }

    [Fact]
    public void Cid_IsFoundInsideParentCidWhenThereIsNoCidLine()
    {
        const string desc = "version=1\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n";
        Assert.Equal(0xffffffffu, VmdkDescriptor.ReadCid(desc, parent: false));
        Assert.Equal(0xffffffffu, VmdkDescriptor.ReadCid(desc, parent: true));
    }

    [Theory]
    [InlineData("CID=zz\nparentCID=1\n", null)]
    [InlineData("CID= 0x1A\nparentCID=1\n", 0x1au)]
    [InlineData("CID=123456789\nparentCID=1\n", 0x23456789u)]
    [InlineData("CID=-1\nparentCID=1\n", 0xffffffffu)]
    public void Cid_IsScannedLikeSscanfHex(string desc, uint? expected) => Assert.Equal(expected, VmdkDescriptor.ReadCid(desc, parent: false));

    [Fact]
    public void CreateType_IsTheQuotedValueAfterTheFirstOccurrence()
    {
        Assert.Equal("twoGbMaxExtentFlat", VmdkDescriptor.FindQuoted("createType=\"twoGbMaxExtentFlat\"\n", "createType"));
        // The first occurrence counts, even inside a comment.
        Assert.Equal("x", VmdkDescriptor.FindQuoted("# createType=\"x\"\ncreateType=\"vmfs\"\n", "createType"));
        Assert.Null(VmdkDescriptor.FindQuoted("createType=\"open", "createType"));
        Assert.Null(VmdkDescriptor.FindQuoted("version=1\n", "createType"));
    }

    [Fact]
    public void Extents_FlatNeedsAnOffsetAndSparseMustNotHaveOne()
    {
        var e = Assert.Throws<VmdkFormatException>(() => VmdkDescriptor.ParseExtents("RW 2048 FLAT \"a-flat.vmdk\"\n"));
        Assert.Equal("Invalid extent line: RW 2048 FLAT \"a-flat.vmdk\"", e.Message);
        e = Assert.Throws<VmdkFormatException>(() => VmdkDescriptor.ParseExtents("RW 2048 SPARSE \"a.vmdk\" 7\r\n"));
        Assert.Equal("Invalid extent line: RW 2048 SPARSE \"a.vmdk\" 7\r", e.Message);
    }

    [Fact]
    public void Extents_OnlyRwLinesOfKnownTypesCount()
    {
        var list = VmdkDescriptor.ParseExtents(
            "RW 2048 FLAT \"a.vmdk\" 4\nRDONLY 2048 FLAT \"b.vmdk\" 0\nRW 2048 ZERO\nRW 2048 FOO \"c.vmdk\"\nRW 0 FLAT \"d.vmdk\" 0\nRW 16 VMFS \"e.vmdk\"\nRW 8 SPARSE \"/abs/f.vmdk\"\n");
        Assert.Equal(
            [new VmdkExtentLine(2048, "FLAT", "a.vmdk", 4), new VmdkExtentLine(16, "VMFS", "e.vmdk", 0), new VmdkExtentLine(8, "SPARSE", "/abs/f.vmdk", 0)],
            list);
    }

    [Fact]
    public void Extents_ALineAfterABlankLineIsReadTwice()
    {
        // sscanf skips the newline of the blank line and reads the next line from there; QEMU
        // 7.2 opens such a descriptor with the extent twice (twice the size).
        var list = VmdkDescriptor.ParseExtents("createType=\"monolithicFlat\"\n\nRW 2048 FLAT \"a.vmdk\" 0\n");
        Assert.Equal(2, list.Count);
    }

    [Fact]
    public void Extents_VmfsTakesNoOffset()
    {
        Assert.Throws<VmdkFormatException>(() => VmdkDescriptor.ParseExtents("RW 16 VMFS \"e.vmdk\" 0\n"));
    }

    [Fact]
    public void WithCid_ReplacesTheNumberAndKeepsTheRestFromParentCid()
    {
        var area = Text("# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType=\"monolithicSparse\"\n");
        var updated = VmdkDescriptor.WithCid(area, 0xab)!;
        Assert.Equal(VmdkDescriptor.DescriptorAreaSize, updated.Length);
        string text = VmdkDescriptor.CString(updated);
        Assert.Equal("# Disk DescriptorFile\nversion=1\nCID=ab\nparentCID=ffffffff\ncreateType=\"monolithicSparse\"\n", text);
        // The new text is shorter: the old tail stays behind the terminator, as in QEMU's buffer.
        Assert.Equal(0, updated[text.Length]);
        Assert.Equal(area[(text.Length + 1)..], updated[(text.Length + 1)..area.Length]);
    }

    [Fact]
    public void WithCid_RefusesADescriptorWithoutParentCid() => Assert.Null(VmdkDescriptor.WithCid(Text("CID=1\n"), 5));

    [Fact]
    public void ParentHint_NeedsItsClosingQuote()
    {
        Assert.Equal("base.vmdk", VmdkDescriptor.ReadParentHint("parentFileNameHint=\"base.vmdk\"\n"));
        Assert.Null(VmdkDescriptor.ReadParentHint("CID=1\n"));
        Assert.Throws<FormatException>(() => VmdkDescriptor.ReadParentHint("parentFileNameHint=\"base.vmdk\n"));
    }
}
