using Vdisk.Graph;
using Vdisk.Permissions;

namespace Vdisk.Drivers.CopyOnRead;

/// <summary>
/// A <c>copy-on-read</c> filter node: reads go to the child with copy-on-read
/// (<see cref="Graph.CopyOnRead"/>), everything else passes through unchanged.
/// </summary>
public sealed class CopyOnReadNode : BlockNode
{
    private readonly BdrvChild _file;

    internal CopyOnReadNode(string nodeName, NodeFlags flags, BlockNode file)
        : base(nodeName, flags, file.Filename)
    {
        _file = AttachChild("file", file, ChildRole.Filtered | ChildRole.Primary);
    }

    /// <inheritdoc />
    public override string DriverName => "copy-on-read";

    /// <inheritdoc />
    public override bool IsProtocol => false;

    /// <inheritdoc />
    public override IChildPermissionRule PermissionRule => CopyOnReadChildPermissionRule.Instance;

    /// <summary>The filtered node.</summary>
    public BlockNode File => _file.Node;

    /// <inheritdoc />
    public override long Length => File.Length;

    /// <inheritdoc />
    public override bool HasZeroInit => File.HasZeroInit;

    /// <inheritdoc />
    public override bool UnallocatedReadsAsZeroes => File.UnallocatedReadsAsZeroes;

    /// <inheritdoc />
    public override ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken = default) =>
        Graph.CopyOnRead.ReadAsync(File, offset, buffer, cancellationToken);

    /// <inheritdoc />
    public override ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default) =>
        File.WriteAsync(offset, data, flags, cancellationToken);

    /// <inheritdoc />
    public override ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags flags = ZeroFlags.None, CancellationToken cancellationToken = default) =>
        File.WriteZeroesAsync(offset, length, flags, cancellationToken);

    /// <inheritdoc />
    public override ValueTask DiscardAsync(long offset, long length, CancellationToken cancellationToken = default) =>
        File.DiscardAsync(offset, length, cancellationToken);

    /// <inheritdoc />
    public override ValueTask FlushAsync(CancellationToken cancellationToken = default) => File.FlushAsync(cancellationToken);

    /// <inheritdoc />
    public override ValueTask TruncateAsync(long length, CancellationToken cancellationToken = default) =>
        File.TruncateAsync(length, cancellationToken);

    /// <inheritdoc />
    public override ValueTask TruncateAsync(long length, Preallocation preallocation, CancellationToken cancellationToken = default) =>
        File.TruncateAsync(length, preallocation, cancellationToken);

    /// <summary>bdrv_co_block_status_from_file: the child answers.</summary>
    public override ValueTask<BlockStatus> GetBlockStatusAsync(long offset, long length, CancellationToken cancellationToken = default) =>
        File.GetBlockStatusAsync(offset, length, cancellationToken);
}
