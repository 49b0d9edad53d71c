using Vdisk.Native;
using Xunit;

namespace Vdisk.Tests.Native;

public class TemporaryFileTests
{
    [Theory]
    [InlineData(null, "/var/tmp")]
    [InlineData("", "/var/tmp")]
    // /tmp is often a tmpfs, too small for an overlay that can grow as large as the disk.
    [InlineData("/tmp", "/var/tmp")]
    [InlineData("/scratch", "/scratch")]
    [InlineData("/tmp/sub", "/tmp/sub")]
    public void Overlays_GoToTmpdir_WithVarTmpForTmp(string? tmpdir, string expected) =>
        Assert.Equal(expected, TemporaryFile.DirectoryFor(tmpdir));
}
