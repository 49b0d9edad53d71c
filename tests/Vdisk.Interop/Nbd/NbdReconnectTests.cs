using Vdisk.Interop.Support;
using Vdisk.Native;
using Vdisk.Permissions;
using Xunit;

namespace Vdisk.Interop.Nbd;

/// <summary>
/// reconnect-delay as QEMU 7.2 has it, against a real qemu-nbd that is killed and started again:
/// within the delay a request waits for the new connection and is sent again; without a delay
/// it fails with EIO at once.
/// </summary>
public class NbdReconnectTests
{
    private static Daemon QemuNbd(string socket, string image) =>
        Daemon.Start("qemu-nbd", ["-t", "-f", "raw", "-x", "disk", "-k", socket, image], socket);

    private static DiskImage OpenOverNbd(string socket, int reconnectDelay) =>
        DiskImage.Open(ImageSource.FromImageOptions(
            $"driver=raw,file.driver=nbd,file.server.type=unix,file.server.path={socket},file.export=disk,file.reconnect-delay={reconnectDelay}"),
            AccessProfiles.QemuIoReadWrite);

    [Fact]
    public async Task WithinReconnectDelay_ARequestWaitsForTheServerAndSucceeds()
    {
        using var dir = new TempDir();
        var image = Serve.PatternedRaw(dir);
        string socket = dir.File("s.sock");
        var server = QemuNbd(socket, image);
        await using var disk = OpenOverNbd(socket, reconnectDelay: 300);
        var buffer = new byte[65536];
        await disk.ReadAsync(0, buffer);
        server.Dispose();
        File.Delete(socket);

        var read = disk.ReadAsync(1 << 20, buffer).AsTask();
        // The request can only finish on a new connection: start the server again.
        using var again = QemuNbd(socket, image);
        await read.WaitAsync(TimeSpan.FromSeconds(120));
        Assert.All(buffer, b => Assert.Equal(0xcd, b));
    }

    [Fact]
    public async Task WithoutReconnectDelay_ARequestFailsWithEio()
    {
        using var dir = new TempDir();
        var image = Serve.PatternedRaw(dir);
        string socket = dir.File("s.sock");
        var server = QemuNbd(socket, image);
        await using var disk = OpenOverNbd(socket, reconnectDelay: 0);
        var buffer = new byte[4096];
        await disk.ReadAsync(0, buffer);
        server.Dispose();
        File.Delete(socket);
        var e = await Assert.ThrowsAsync<NativeIOException>(() => disk.ReadAsync(0, buffer).AsTask());
        Assert.Equal(Errno.EIO, e.Errno);
        Assert.Equal("Input/output error", e.Message);
    }
}
