using Vdisk.Graph;
using Vdisk.Permissions;

namespace Vdisk.Drivers.Null;

/// <summary>
/// A <c>null-co</c>/<c>null-aio</c> node: writes, zero writes, discards and flushes succeed and
/// keep nothing; reads leave the caller's buffer as it was unless <c>read-zeroes=on</c>. Like
/// every protocol without a file it takes no lock bytes. Block status is QEMU's: nothing is
/// allocated, unless reads give zeroes, when the whole node is a present zero range at its own
/// offset.
/// </summary>
public sealed class NullNode : BlockNode
{
    private readonly string _driverName;
    private readonly long _length;
    private readonly TimeSpan _latency;
    private readonly bool _readZeroes;

    internal NullNode(string nodeName, NodeFlags flags, string driverName, string filename, long size, long latencyNs, bool readZeroes)
        : base(nodeName, flags, filename)
    {
        _driverName = driverName;
        // bdrv_getlength counts whole sectors (refresh_total_sectors rounds the size up).
        _length = size > long.MaxValue - 511 ? size : (size + 511) / 512 * 512;
        _latency = TimeSpan.FromTicks(latencyNs / 100);
        _readZeroes = readZeroes;
    }

    /// <inheritdoc />
    public override string DriverName => _driverName;

    /// <inheritdoc />
    public override bool IsProtocol => true;

    /// <inheritdoc />
    public override IChildPermissionRule PermissionRule => LeafChildPermissionRule.Instance;

    /// <inheritdoc />
    public override long Length => _length;

    /// <summary>null_allocated_file_size: nothing is stored.</summary>
    public override long? AllocatedSize => 0;

    /// <summary>No bdrv_get_info.</summary>
    public override bool HasDriverInfo => false;

    /// <summary>null has no supports_backing: what it does not hold is not zero.</summary>
    public override bool UnallocatedReadsAsZeroes => false;

    /// <summary>No bdrv_has_zero_init: QEMU assumes nothing about a new null node's contents.</summary>
    public override bool HasZeroInit => false;

    private ValueTask Complete(CancellationToken cancellationToken) =>
        _latency > TimeSpan.Zero ? new ValueTask(Task.Delay(_latency, cancellationToken)) : ValueTask.CompletedTask;

    /// <inheritdoc />
    public override ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        if (_readZeroes) buffer.Span.Clear();
        return Complete(cancellationToken);
    }

    /// <inheritdoc />
    public override ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default) =>
        Complete(cancellationToken);

    /// <inheritdoc />
    public override ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags flags = ZeroFlags.None, CancellationToken cancellationToken = default) =>
        Complete(cancellationToken);

    /// <inheritdoc />
    public override ValueTask DiscardAsync(long offset, long length, CancellationToken cancellationToken = default) => ValueTask.CompletedTask;

    /// <inheritdoc />
    public override ValueTask FlushAsync(CancellationToken cancellationToken = default) => Complete(cancellationToken);

    /// <inheritdoc />
    public override ValueTask<BlockStatus> GetBlockStatusAsync(long offset, long length, CancellationToken cancellationToken = default)
    {
        var status = _readZeroes
            ? new BlockStatus(length, BlockStatusFlags.Zero | BlockStatusFlags.Allocated, offset, this)
            : new BlockStatus(length, BlockStatusFlags.None);
        return ValueTask.FromResult(status);
    }
}
