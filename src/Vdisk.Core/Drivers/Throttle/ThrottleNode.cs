using Vdisk.Graph;
using Vdisk.Options;
using Vdisk.Permissions;

namespace Vdisk.Drivers.Throttle;

/// <summary>
/// A <c>throttle</c> filter node: reads, writes, zero writes and discards wait for their group's
/// limits (a discard and a zero write count as writes of their length), then go to the child;
/// flushes and everything else pass straight through.
/// </summary>
public sealed class ThrottleNode : FilterNode, IImageInfoSource
{
    private readonly ThrottleGroupMember _member;

    /// <summary>Creates the node; if attaching the child fails, the caller still owns <paramref name="member"/>.</summary>
    internal ThrottleNode(string nodeName, NodeFlags flags, BlockNode file, ThrottleGroupMember member)
        : base(nodeName, flags, JsonFilename(member.Group.Name, file), file)
    {
        _member = member;
    }

    /// <summary>
    /// bdrv_refresh_filename: throttle-group is a strong runtime option, so the node is known by
    /// a json: filename holding it and its child's options.
    /// </summary>
    private static string JsonFilename(string group, BlockNode file)
    {
        var dict = new OptionDict();
        dict.Set(ThrottleDriver.GroupOption, group);
        dict.Set("driver", ThrottleDriver.DriverName);
        dict.Set("file", NodeFullOptions.Of(file));
        var sb = new System.Text.StringBuilder(JsonOptions.Prefix);
        dict.WriteJson(sb);
        return sb.ToString();
    }

    /// <inheritdoc />
    public override string DriverName => ThrottleDriver.DriverName;

    /// <summary>The group the node belongs to.</summary>
    public ThrottleGroup Group => _member.Group;

    /// <summary>
    /// bdrv_query_image_info on a filter: its own name, format and sizes, and what bdrv_get_info
    /// passes through from the filtered node (cluster size, dirty flag); no format-specific data.
    /// </summary>
    public ImageInfo GetImageInfo()
    {
        var filtered = File is IImageInfoSource source ? source.GetImageInfo() : null;
        return new ImageInfo
        {
            Filename = Filename,
            Format = DriverName,
            VirtualSize = Length,
            ActualSize = AllocatedSize,
            ClusterSize = filtered?.ClusterSize,
            VmStateOffset = filtered?.VmStateOffset ?? 0,
            DirtyFlag = filtered?.DirtyFlag ?? false,
            HasDirtyFlag = HasDriverInfo,
        };
    }

    /// <inheritdoc />
    public override async ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        await _member.InterceptAsync(buffer.Length, isWrite: false, cancellationToken).ConfigureAwait(false);
        await File.ReadAsync(offset, buffer, cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public override async ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default)
    {
        await _member.InterceptAsync(data.Length, isWrite: true, cancellationToken).ConfigureAwait(false);
        await File.WriteAsync(offset, data, flags, cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public override async ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags flags = ZeroFlags.None, CancellationToken cancellationToken = default)
    {
        await _member.InterceptAsync(length, isWrite: true, cancellationToken).ConfigureAwait(false);
        await File.WriteZeroesAsync(offset, length, flags, cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public override async ValueTask DiscardAsync(long offset, long length, CancellationToken cancellationToken = default)
    {
        await _member.InterceptAsync(length, isWrite: true, cancellationToken).ConfigureAwait(false);
        await File.DiscardAsync(offset, length, cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public override async ValueTask WriteCompressedAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken cancellationToken = default)
    {
        await _member.InterceptAsync(data.Length, isWrite: true, cancellationToken).ConfigureAwait(false);
        await File.WriteCompressedAsync(offset, data, cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public override async ValueTask WriteCompressedUnitAsync(long offset, ReadOnlyMemory<byte> unit, byte[]? compressed, CancellationToken cancellationToken = default)
    {
        await _member.InterceptAsync(unit.Length, isWrite: true, cancellationToken).ConfigureAwait(false);
        await File.WriteCompressedUnitAsync(offset, unit, compressed, cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    /// <remarks>throttle_close: the node leaves its group.</remarks>
    protected internal override ValueTask CloseAsync()
    {
        _member.Dispose();
        return ValueTask.CompletedTask;
    }
}
