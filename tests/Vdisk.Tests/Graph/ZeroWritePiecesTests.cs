using Vdisk.Graph;
using Xunit;

namespace Vdisk.Tests.Graph;

public class ZeroWritePiecesTests
{
    [Fact]
    public void UnalignedHeadAndTail_GoApartFromTheAlignedBulk() =>
        Assert.Equal([(100L, 412L), (512L, 1024L), (1536L, 64L)], ZeroWritePieces.Split(100, 1500, 512, long.MaxValue / 512 * 512));

    [Fact]
    public void TheBulk_IsCutAtTheLargestWholePiece() =>
        Assert.Equal([(0L, 1024L), (1024L, 1024L), (2048L, 512L), (2560L, 10L)], ZeroWritePieces.Split(0, 2570, 512, 1024));

    [Fact]
    public void AWriteInsideOneUnit_IsOnePiece() =>
        Assert.Equal([(10L, 20L)], ZeroWritePieces.Split(10, 20, 512, 1024));
}
