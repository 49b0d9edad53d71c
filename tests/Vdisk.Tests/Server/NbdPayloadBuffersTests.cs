using Vdisk.Server.Nbd;
using Xunit;

namespace Vdisk.Tests.Server;

public class NbdPayloadBuffersTests
{
    [Theory]
    [InlineData(1)]
    [InlineData(4096)]
    [InlineData(256 * 1024)]
    [InlineData(256 * 1024 + 1)]
    public void Rent_GivesAtLeastTheLength(int length)
    {
        var buffers = new NbdPayloadBuffers();
        Assert.True(buffers.Rent(length).Length >= length);
    }

    [Fact]
    public void AReturnedBuffer_IsRentedAgainForTheSameSize_NotForAnother()
    {
        var buffers = new NbdPayloadBuffers();
        var first = buffers.Rent(256 * 1024);
        buffers.Return(first);
        Assert.Equal(first.Length, buffers.Retained);
        Assert.NotSame(first, buffers.Rent(64 * 1024));
        Assert.Same(first, buffers.Rent(200 * 1024));
        Assert.Equal(0, buffers.Retained);
    }

    [Fact]
    public void Returns_BeyondTheLimit_AreNotKept()
    {
        var buffers = new NbdPayloadBuffers();
        const int size = 1024 * 1024;
        var rented = Enumerable.Range(0, (int)(NbdPayloadBuffers.RetainLimit / size) + 3).Select(_ => buffers.Rent(size)).ToList();
        foreach (var b in rented) buffers.Return(b);
        Assert.Equal(NbdPayloadBuffers.RetainLimit, buffers.Retained);
    }
}
