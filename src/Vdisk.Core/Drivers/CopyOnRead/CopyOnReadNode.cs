using Vdisk.Graph;
using Vdisk.Permissions;

namespace Vdisk.Drivers.CopyOnRead;

/// <summary>
/// A <c>copy-on-read</c> filter node: reads go to the child with copy-on-read
/// (<see cref="Graph.CopyOnRead"/>), everything else passes through unchanged.
/// </summary>
public sealed class CopyOnReadNode : FilterNode
{
    internal CopyOnReadNode(string nodeName, NodeFlags flags, BlockNode file)
        : base(nodeName, flags, file.Filename, file)
    {
    }

    /// <inheritdoc />
    public override string DriverName => "copy-on-read";

    /// <inheritdoc />
    public override IChildPermissionRule PermissionRule => CopyOnReadChildPermissionRule.Instance;

    /// <inheritdoc />
    public override bool ReadsMayWrite => true;

    /// <inheritdoc />
    public override ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken = default) =>
        Graph.CopyOnRead.ReadAsync(File, offset, buffer, cancellationToken);
}
