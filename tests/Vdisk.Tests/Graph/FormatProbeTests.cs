using Vdisk.Graph;
using Xunit;

namespace Vdisk.Tests.Graph;

public class FormatProbeTests
{
    [Fact]
    public void Qcow2MagicIsTheFourBytesQemuWrites() =>
        Assert.True(GraphOpener.LooksLikeOtherFormat([0x51, 0x46, 0x49, 0xfb, 0, 0, 0, 3]));

    [Theory]
    [InlineData(new byte[] { 0x51, 0x46, 0x49, 0xc3, 0xbb })]
    [InlineData(new byte[] { 0, 0, 0, 0 })]
    [InlineData(new byte[] { 0x51, 0x46, 0x49 })]
    public void OtherContentIsRaw(byte[] head) => Assert.False(GraphOpener.LooksLikeOtherFormat(head));
}
