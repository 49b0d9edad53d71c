using Vdisk.Drivers.File;
using Vdisk.Permissions;
using Vdisk.Locking;
using Vdisk.Native;
using Xunit;

namespace Vdisk.Tests.Drivers;

/// <summary>
/// After a failed fdatasync the kernel may already have marked the unwritten pages clean, so a
/// later fdatasync can succeed without the data ever reaching the disk. QEMU's file-posix
/// (page_cache_inconsistent) therefore fails every later flush with the first failure's errno.
/// </summary>
public sealed class FileNodeFlushTests : IDisposable
{
    private readonly string _path = Path.Combine(Path.GetTempPath(), $"vdisk-flush-{Guid.NewGuid():N}.raw");

    public void Dispose() => File.Delete(_path);

    private FileNode OpenNode(bool direct = false)
    {
        File.WriteAllBytes(_path, new byte[4096]);
        return FileNode.Open("file0", _path, NodeFlags.ReadWrite, LockingMode.Off, direct);
    }

    private static int FlushErrno(FileNode node)
    {
        var e = Assert.Throws<NativeIOException>(() => node.FlushAsync().AsTask().GetAwaiter().GetResult());
        return e.Errno;
    }

    [Theory]
    [InlineData(Errno.EIO)]
    [InlineData(Errno.ENOSPC)]
    public async Task AfterAFailedFdatasync_EveryLaterFlushFailsWithItsErrno(int errno)
    {
        var node = OpenNode();
        try
        {
            int syncs = 0;
            node.SyncData = _ => ++syncs == 1 ? errno : 0;
            await node.WriteAsync(0, new byte[512]);
            Assert.Equal(errno, FlushErrno(node));
            // The disk "recovered": fdatasync would now succeed, but what it lost stays lost.
            Assert.Equal(errno, FlushErrno(node));
            await node.WriteAsync(0, new byte[512]);
            Assert.Equal(errno, FlushErrno(node));
            Assert.Equal(errno, FlushErrno(node));
        }
        finally
        {
            await node.CloseAsync();
        }
    }

    [Fact]
    public async Task HealthyFlushesSucceed()
    {
        var node = OpenNode();
        try
        {
            int syncs = 0;
            node.SyncData = _ => { syncs++; return 0; };
            await node.WriteAsync(0, new byte[512]);
            await node.FlushAsync();
            await node.WriteZeroesAsync(512, 512);
            await node.FlushAsync();
            Assert.Equal(2, syncs);
        }
        finally
        {
            await node.CloseAsync();
        }
    }

    /// <summary>
    /// bdrv_co_flush skips the fdatasync when nothing was written since the last one
    /// (write_gen == flushed_gen): closing an image opened read-write that was only read costs
    /// no disk flush, as with qemu-io.
    /// </summary>
    [Fact]
    public async Task AFlushWithNoWriteSinceTheLastOne_DoesNotReachTheDisk()
    {
        var node = OpenNode();
        try
        {
            int syncs = 0;
            node.SyncData = _ => { syncs++; return 0; };
            await node.FlushAsync();
            Assert.Equal(0, syncs);
            await node.WriteAsync(0, new byte[512]);
            await node.FlushAsync();
            await node.FlushAsync();
            Assert.Equal(1, syncs);
            await node.DiscardAsync(0, 4096);
            await node.FlushAsync();
            Assert.Equal(2, syncs);
            await node.TruncateAsync(8192);
            await node.FlushAsync();
            Assert.Equal(3, syncs);
        }
        finally
        {
            await node.CloseAsync();
        }
    }
}
