using Vdisk.Drivers.File;
using Vdisk.Locking;
using Vdisk.Permissions;
using Xunit;

namespace Vdisk.Tests.Drivers;

/// <summary>
/// Reads larger than the inline limit copy what the page cache holds inline (preadv2 with
/// RWF_NOWAIT) and leave the rest to the thread pool: the bytes must be the same either way,
/// and past the end of the file they read as zeroes.
/// </summary>
public sealed class FileNodeReadTests : IDisposable
{
    private readonly string _path = Path.Combine(Path.GetTempPath(), $"vdisk-read-{Guid.NewGuid():N}.raw");

    public void Dispose() => File.Delete(_path);

    private byte[] WriteFile(int length)
    {
        // A pattern that does not repeat at any power-of-two stride, so a misplaced chunk shows.
        var data = new byte[length];
        for (int i = 0; i < length; i++) data[i] = (byte)((i * 2654435761u) >> 24);
        File.WriteAllBytes(_path, data);
        return data;
    }

    [Theory]
    [InlineData(256 * 1024, 0, 256 * 1024)]
    [InlineData(1024 * 1024, 4096, 300 * 1024)]
    [InlineData(1024 * 1024, 12345, 1000 * 1024)]
    public async Task LargeRead_ReturnsTheFilesBytes(int fileLength, int offset, int length)
    {
        var data = WriteFile(fileLength);
        var node = FileNode.Open("file0", _path, NodeFlags.None, LockingMode.Off);
        try
        {
            var buffer = new byte[length];
            await node.ReadAsync(offset, buffer);
            Assert.True(data.AsSpan(offset, length).SequenceEqual(buffer));
        }
        finally
        {
            await node.CloseAsync();
        }
    }

    [Fact]
    public async Task LargeRead_PastTheEnd_ReadsAsZeroes()
    {
        const int fileLength = 100 * 1024 + 100;
        var data = WriteFile(fileLength);
        var node = FileNode.Open("file0", _path, NodeFlags.None, LockingMode.Off);
        try
        {
            var buffer = new byte[192 * 1024];
            Array.Fill(buffer, (byte)0xff);
            await node.ReadAsync(0, buffer);
            Assert.True(data.AsSpan().SequenceEqual(buffer.AsSpan(0, fileLength)));
            Assert.DoesNotContain(buffer.AsSpan(fileLength).ToArray(), b => b != 0);
        }
        finally
        {
            await node.CloseAsync();
        }
    }
}
