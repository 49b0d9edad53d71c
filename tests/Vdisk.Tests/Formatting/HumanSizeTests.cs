using Xunit;

namespace Vdisk.Tests.Formatting;

public class HumanSizeTests
{
    // Values checked against qemu-img 7.2 info output.
    [Theory]
    [InlineData(0L, "0 B")]
    [InlineData(69632L, "68 KiB")]
    [InlineData(1048576L, "1 MiB")]
    [InlineData(1000448L, "977 KiB")]
    [InlineData(1100288L, "1.05 MiB")]
    [InlineData(200704L, "196 KiB")]
    [InlineData(67108864L, "64 MiB")]
    [InlineData(401408L, "392 KiB")]
    // %0.3g switches to the exponent form when rounding reaches a fourth digit (qemu-img info of a
    // 1023488-byte raw file: "virtual size: 1e+03 KiB").
    [InlineData(1023488L, "1e+03 KiB")]
    [InlineData(1047552L, "0.999 MiB")]
    [InlineData(10234L, "9.99 KiB")]
    [InlineData(10235L, "10 KiB")]
    [InlineData(1152L, "1.12 KiB")]
    [InlineData(999L, "999 B")]
    public void SizeToStrMatchesQemuImg(long bytes, string expected) => Assert.Equal(expected, Vdisk.Output.QemuText.SizeToStr(bytes));

    [Fact]
    public void RawInfoJson_HasQemuImgKeysInOrder()
    {
        var info = new ImageInfo { Filename = "m.raw", Format = "raw", VirtualSize = 1048576, ActualSize = 69632 };
        Assert.Equal("{\n    \"virtual-size\": 1048576,\n    \"filename\": \"m.raw\",\n    \"format\": \"raw\",\n    \"actual-size\": 69632,\n    \"dirty-flag\": false\n}",
            info.ToJson().Replace("\r\n", "\n"));
    }
}
