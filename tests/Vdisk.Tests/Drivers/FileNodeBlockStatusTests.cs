using Vdisk.Drivers.File;
using Vdisk.Graph;
using Vdisk.Locking;
using Vdisk.Permissions;
using Xunit;

namespace Vdisk.Tests.Drivers;

/// <summary>
/// The file node remembers the last data range block status found (QEMU's block-status cache):
/// queries inside it answer the same without lseek, and whatever can make holes forgets it.
/// </summary>
public sealed class FileNodeBlockStatusTests : IDisposable
{
    private const int Size = 1024 * 1024;
    private readonly string _path = Path.Combine(Path.GetTempPath(), $"vdisk-status-{Guid.NewGuid():N}.raw");

    public void Dispose() => File.Delete(_path);

    /// <summary>Non-zero data in every byte, so the whole file is allocated data.</summary>
    private static byte[] Pattern() => Enumerable.Range(0, Size).Select(i => (byte)(i * 31 + 7 | 1)).ToArray();

    [Fact]
    public async Task QueriesInsideAKnownDataRange_AnswerData_ClippedToTheQuery()
    {
        File.WriteAllBytes(_path, Pattern());
        var node = FileNode.Open("file0", _path, NodeFlags.None, LockingMode.Off);
        try
        {
            var whole = await node.GetBlockStatusAsync(0, Size);
            Assert.Equal((Size, BlockStatusFlags.Data | BlockStatusFlags.Allocated), (whole.Length, whole.Flags));
            var inside = await node.GetBlockStatusAsync(4096, 8192);
            Assert.Equal((8192L, BlockStatusFlags.Data | BlockStatusFlags.Allocated, (long?)4096), (inside.Length, inside.Flags, inside.HostOffset));
            var tail = await node.GetBlockStatusAsync(Size - 512, 4096);
            Assert.Equal(512, tail.Length);
        }
        finally
        {
            await node.CloseAsync();
        }
    }

    [Fact]
    public async Task AfterTruncatingTheDataAway_TheHoleIsSeen()
    {
        File.WriteAllBytes(_path, Pattern());
        var node = FileNode.Open("file0", _path, NodeFlags.ReadWrite, LockingMode.Off);
        try
        {
            Assert.Equal(BlockStatusFlags.Data | BlockStatusFlags.Allocated, (await node.GetBlockStatusAsync(0, Size)).Flags);
            await node.TruncateAsync(0);
            await node.TruncateAsync(Size);
            // Grown from empty, the file gets its first block written (allocate_first_block); the rest is a hole.
            var first = await node.GetBlockStatusAsync(0, Size);
            Assert.Equal((4096L, BlockStatusFlags.Data | BlockStatusFlags.Allocated), (first.Length, first.Flags));
            Assert.Equal(BlockStatusFlags.Zero | BlockStatusFlags.Allocated, (await node.GetBlockStatusAsync(65536, 4096)).Flags);
        }
        finally
        {
            await node.CloseAsync();
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task AfterZeroingOrDiscardingWithUnmap_TheHoleIsSeen(bool discard)
    {
        File.WriteAllBytes(_path, Pattern());
        var node = FileNode.Open("file0", _path, NodeFlags.ReadWrite, LockingMode.Off);
        node.Unmap = true;
        try
        {
            Assert.Equal(BlockStatusFlags.Data | BlockStatusFlags.Allocated, (await node.GetBlockStatusAsync(0, Size)).Flags);
            if (discard) await node.DiscardAsync(65536, 65536);
            else await node.WriteZeroesAsync(65536, 65536, ZeroFlags.MayUnmap);
            Assert.Equal(BlockStatusFlags.Zero | BlockStatusFlags.Allocated, (await node.GetBlockStatusAsync(65536, 4096)).Flags);
        }
        finally
        {
            await node.CloseAsync();
        }
    }
}
