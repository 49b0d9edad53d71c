using Vdisk.Graph;
using Vdisk.Permissions;

namespace Vdisk.Tests.Permissions;

/// <summary>A node that does no I/O: only its place in the graph and its permissions matter.</summary>
internal abstract class NoIoNode(string name, NodeFlags flags) : BlockNode(name, flags, name)
{
    public override long Length => 0;
    public override ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken = default) => ValueTask.CompletedTask;
    public override ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default) => ValueTask.CompletedTask;
    public override ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags flags = ZeroFlags.None, CancellationToken cancellationToken = default) => ValueTask.CompletedTask;
    public override ValueTask DiscardAsync(long offset, long length, CancellationToken cancellationToken = default) => ValueTask.CompletedTask;
    public override ValueTask FlushAsync(CancellationToken cancellationToken = default) => ValueTask.CompletedTask;
    public override ValueTask<BlockStatus> GetBlockStatusAsync(long offset, long length, CancellationToken cancellationToken = default) =>
        ValueTask.FromResult(new BlockStatus(length, BlockStatusFlags.Data));
}

/// <summary>A protocol node without a file: records what the permission refresh asks of it.</summary>
internal sealed class FakeProtocolNode(string name, NodeFlags flags) : NoIoNode(name, flags)
{
    public readonly List<string> Events = new();
    public override string DriverName => "fake-file";
    public override bool IsProtocol => true;
    public override IChildPermissionRule PermissionRule => LeafChildPermissionRule.Instance;
    public Func<PermissionPair, Exception?>? FailPrepare { get; set; }

    /// <summary>A lock conflict is returned as a file node returns it; any other failure is thrown.</summary>
    protected internal override Vdisk.Locking.LockConflictException? PreparePermissions(PermissionPair cumulative)
    {
        Events.Add($"prepare {cumulative}");
        return FailPrepare?.Invoke(cumulative) switch
        {
            null => null,
            Vdisk.Locking.LockConflictException conflict => conflict,
            var e => throw e,
        };
    }

    protected internal override void CommitPermissions(PermissionPair cumulative) => Events.Add($"commit {cumulative}");
    protected internal override void AbortPermissions() => Events.Add("abort");

}

/// <summary>A format node with a chosen child-permission rule (raw, qcow2-like default rules).</summary>
internal sealed class FakeFormatNode : NoIoNode
{
    private readonly IChildPermissionRule _rule;

    public FakeFormatNode(string name, NodeFlags flags, IChildPermissionRule rule) : base(name, flags) => _rule = rule;

    public BdrvChild Attach(string childName, BlockNode child, ChildRole role) => AttachChild(childName, child, role);

    public override string DriverName => "fake-format";
    public override bool IsProtocol => false;
    public override IChildPermissionRule PermissionRule => _rule;
}

/// <summary>Builds the graphs QEMU builds for raw, qcow2 and qcow2 overlays, and attaches a user.</summary>
internal static class FakeGraphs
{
    public sealed record Built(BlockNode Top, FakeProtocolNode File, FakeProtocolNode? BackingFile);

    public static Built Build(string format, OpenFlags flags)
    {
        var nodeFlags = BackendPermissions.NodeFlagsFor(flags);
        var file = new FakeProtocolNode("file", nodeFlags);
        switch (format)
        {
            case "raw":
            {
                var raw = new FakeFormatNode("raw", nodeFlags, RawChildPermissionRule.Instance);
                raw.Attach("file", file, RawChildPermissionRule.FileRole(hasWindow: false));
                return new(raw, file, null);
            }
            case "raw-window":
            {
                var raw = new FakeFormatNode("raw", nodeFlags, RawChildPermissionRule.Instance);
                raw.Attach("file", file, RawChildPermissionRule.FileRole(hasWindow: true));
                return new(raw, file, null);
            }
            case "qcow2":
            {
                var q = new FakeFormatNode("qcow2", nodeFlags, DefaultChildPermissionRule.Instance);
                q.Attach("file", file, ChildRole.Image);
                return new(q, file, null);
            }
            case "overlay":
            {
                var q = new FakeFormatNode("overlay", nodeFlags, DefaultChildPermissionRule.Instance);
                q.Attach("file", file, ChildRole.Image);
                var baseFlags = nodeFlags & (NodeFlags.ForceShare | NodeFlags.Inactive | NodeFlags.NoIo);
                var baseFile = new FakeProtocolNode("base-file", baseFlags);
                var baseNode = new FakeFormatNode("base", baseFlags, DefaultChildPermissionRule.Instance);
                baseNode.Attach("file", baseFile, ChildRole.Image);
                q.Attach("backing", baseNode, ChildRole.Cow);
                return new(q, file, baseFile);
            }
            default:
                throw new ArgumentException(format);
        }
    }

    /// <summary>Attaches a user with <paramref name="request"/> and refreshes the graph.</summary>
    public static BdrvChild AttachUser(BlockNode top, PermissionPair request, string name = "user")
    {
        var edge = new BdrvChild("root", ChildRole.Primary, top, name) { Permissions = request };
        top.AddParentEdge(edge);
        PermissionRefresh.Refresh([top]);
        return edge;
    }
}
