using Vdisk.Graph;
using Vdisk.Interop.Support;
using Vdisk.Locking;
using Vdisk.Options;
using Vdisk.Permissions;
using Xunit;

namespace Vdisk.Interop;

/// <summary>
/// Lock hand-over between two long-lived graphs (two daemons) on one raw image, as QEMU's
/// blockdev-set-active does it: inactive nodes hold nothing, inactivation releases, activation
/// takes the locks or fails with QEMU's message.
/// </summary>
public class ActivationTests
{
    private static OptionDict RawOptions(string img) => KeyValParser.Parse($"driver=raw,node-name=disk,file.driver=file,file.filename={img}");

    private static readonly PermissionPair Device = BackendPermissions.GuestDevice(readOnly: false, resizable: true, shareRw: false);

    [Fact]
    public async Task HandOver_SourceReleasesThenDestinationTakes()
    {
        using var dir = new TempDir();
        var img = dir.RawImage();
        int me = Environment.ProcessId;

        var source = new BlockGraph();
        var sourceNode = source.AddNode(RawOptions(img), OpenFlags.ReadWrite);
        await using var sourceUser = DiskImage.Attach(sourceNode, Device, source, "src");
        await sourceUser.WriteAsync(0, new byte[] { 1, 2, 3 });
        Assert.Equal("100,101,201", LockBytesHeld.Describe(LockBytesHeld.Read(me, img)));

        var destination = new BlockGraph();
        var destinationNode = destination.AddNode(RawOptions(img), OpenFlags.ReadWrite | OpenFlags.Inactive);
        await using var destinationUser = DiskImage.Attach(destinationNode, Device, destination, "dst");
        Assert.True(destinationUser.IsSuspended);
        Assert.Equal("100,101,201", LockBytesHeld.Describe(LockBytesHeld.Read(me, img)));

        // Destination first: refused with QEMU's message, stays inactive.
        var e = Assert.Throws<LockConflictException>(() => Activation.Activate(destinationNode));
        Assert.Equal("Failed to get \"write\" lock", e.Message);
        Assert.True(destinationNode.IsInactive);

        Activation.Inactivate(sourceNode);
        Assert.Empty(LockBytesHeld.Read(me, img));
        Assert.Equal(Vdisk.Native.Errno.EPERM,
            (await Assert.ThrowsAsync<Vdisk.Native.NativeIOException>(() => sourceUser.WriteAsync(0, new byte[1]).AsTask())).Errno);
        // Between the two steps nobody holds the image: a raw writer sharing everything gets in.
        Assert.Equal("ok", Outcome.Of(Programs.Run("qemu-io", "-f", "raw", img, "-c", "write 4096 1")));

        Activation.Activate(destinationNode);
        Assert.False(destinationUser.IsSuspended);
        Assert.Equal("100,101,201", LockBytesHeld.Describe(LockBytesHeld.Read(me, img)));
        var back = new byte[3];
        await destinationUser.ReadAsync(0, back);
        Assert.Equal(new byte[] { 1, 2, 3 }, back);
        Assert.Equal("Failed to get \"write\" lock +hint", Outcome.Of(Programs.Run("qemu-io", "-f", "raw", img, "-c", "write 0 1")));

        // The source cannot take its locks back while the destination runs.
        Assert.Throws<LockConflictException>(() => Activation.Activate(sourceNode));

        await destinationUser.DisposeAsync();
        await destination.DeleteNodeAsync("disk");
        Activation.Activate(sourceNode);
        Assert.False(sourceUser.IsSuspended);
        Assert.Equal("100,101,201", LockBytesHeld.Describe(LockBytesHeld.Read(me, img)));
        await sourceUser.DisposeAsync();
        await source.CloseAllAsync();
        Assert.Empty(Support.Holder.ImageDescriptors(me, img));
    }

    [Fact]
    public async Task DeletingANodeInUse_IsRefusedLikeQemu()
    {
        using var dir = new TempDir();
        var img = dir.RawImage();
        var graph = new BlockGraph();
        var node = graph.AddNode(RawOptions(img), OpenFlags.ReadWrite);
        var user = DiskImage.Attach(node, Device, graph);
        var e = await Assert.ThrowsAsync<InvalidOperationException>(() => graph.DeleteNodeAsync("disk").AsTask());
        Assert.Equal("Node disk is in use", e.Message);
        e = await Assert.ThrowsAsync<InvalidOperationException>(() => graph.DeleteNodeAsync("nope").AsTask());
        Assert.Equal("Failed to find node with node-name='nope'", e.Message);
        await user.DisposeAsync();
        await graph.DeleteNodeAsync("disk");
        Assert.Empty(Support.Holder.ImageDescriptors(Environment.ProcessId, img));
    }
}
