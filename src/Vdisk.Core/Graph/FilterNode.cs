using Vdisk.Permissions;

namespace Vdisk.Graph;

/// <summary>
/// A filter (QEMU's drivers with <c>is_filter</c>: throttle, copy-on-read): one child in the
/// filtered and primary role, which gets every request the filter does not change; block status
/// comes from the child (bdrv_co_block_status_from_file), and chain walks pass through it
/// without counting it as a layer. Filters override only the requests they act on.
/// </summary>
public abstract class FilterNode : BlockNode
{
    private readonly BdrvChild _file;

    /// <summary>Creates the filter over <paramref name="file"/>, attached as its <c>file</c> child.</summary>
    protected FilterNode(string nodeName, NodeFlags flags, string filename, BlockNode file)
        : base(nodeName, flags, filename)
    {
        _file = AttachChild("file", file, ChildRole.Filtered | ChildRole.Primary);
    }

    /// <summary>The filtered node.</summary>
    public BlockNode File => _file.Node;

    /// <inheritdoc />
    public override bool IsProtocol => false;

    /// <inheritdoc />
    /// <remarks>bdrv_default_perms on a filtered child: the parents' requests, passed on.</remarks>
    public override IChildPermissionRule PermissionRule => DefaultChildPermissionRule.Instance;

    /// <inheritdoc />
    public override BlockNode? FilteredNode => File;

    /// <inheritdoc />
    public override long Length => File.Length;

    /// <inheritdoc />
    public override bool HasZeroInit => File.HasZeroInit;

    /// <inheritdoc />
    public override bool UnallocatedReadsAsZeroes => File.UnallocatedReadsAsZeroes;

    /// <inheritdoc />
    public override ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken = default) =>
        File.ReadAsync(offset, buffer, cancellationToken);

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
    /// <remarks>The filters' pwritev_compressed: a write the child compresses.</remarks>
    public override bool SupportsCompressedWrites => File.SupportsCompressedWrites;

    /// <inheritdoc />
    public override int CompressedWriteUnit => File.CompressedWriteUnit;

    /// <inheritdoc />
    public override ValueTask WriteCompressedAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken cancellationToken = default) =>
        File.WriteCompressedAsync(offset, data, cancellationToken);

    /// <inheritdoc />
    public override byte[]? CompressUnit(ReadOnlySpan<byte> unit) => File.CompressUnit(unit);

    /// <inheritdoc />
    public override ValueTask WriteCompressedUnitAsync(long offset, ReadOnlyMemory<byte> unit, byte[]? compressed, CancellationToken cancellationToken = default) =>
        File.WriteCompressedUnitAsync(offset, unit, compressed, cancellationToken);

    /// <inheritdoc />
    public override ValueTask EndCompressedWritesAsync(CancellationToken cancellationToken = default) => File.EndCompressedWritesAsync(cancellationToken);

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
