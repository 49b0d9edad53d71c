namespace Vdisk.Graph;

/// <summary>
/// Block status across a backing chain (bdrv_block_status_above): which layer a range comes
/// from and whether it reads as zeroes.
/// </summary>
public static class BlockChain
{
    /// <summary>The backing node of <paramref name="node"/>, or null.</summary>
    public static BlockNode? BackingOf(BlockNode node) => node.Child("backing")?.Node;

    /// <summary>bdrv_filter_or_cow_bs: the node a filter passes requests to, else the backing node, or null.</summary>
    public static BlockNode? FilterOrCowOf(BlockNode node) => node.FilteredNode ?? BackingOf(node);

    /// <summary>
    /// The status of the range at <paramref name="offset"/> through the chain: Allocated is set
    /// when some layer holds it, Depth says which (0 = <paramref name="top"/>, filters not
    /// counted); ranges no layer holds read as zeroes and report the depth of the bottom layer.
    /// </summary>
    public static async ValueTask<BlockStatus> StatusAboveAsync(BlockNode top, long offset, long length, CancellationToken ct = default)
    {
        var node = top;
        int depth = 0;
        while (true)
        {
            var status = await node.GetBlockStatusAsync(offset, length, ct).ConfigureAwait(false);
            if ((status.Flags & BlockStatusFlags.Allocated) != 0 || status.Length == 0) return status with { Depth = depth };
            var backing = FilterOrCowOf(node);
            // qemu-img map skips filters (bdrv_skip_filters): only backing files add to the depth.
            int below = node.FilteredNode is null ? depth + 1 : depth;
            if (backing is null && !node.UnallocatedReadsAsZeroes) return status with { Depth = depth };
            if (backing is null || offset >= backing.Length)
                return status with { Flags = BlockStatusFlags.Zero, Depth = backing is null ? depth : below };
            length = Math.Min(status.Length, backing.Length - offset);
            node = backing;
            depth = below;
        }
    }

    /// <summary>
    /// bdrv_is_allocated_above(top, base) without base: whether a layer from <paramref name="top"/>
    /// down to (excluding) <paramref name="baseNode"/> holds the range at <paramref name="offset"/>
    /// (Allocated, with that layer's Zero flag and Depth), and for how long. A layer the offset
    /// lies past does not shorten the answer.
    /// </summary>
    public static async ValueTask<BlockStatus> AllocatedAboveAsync(BlockNode top, BlockNode? baseNode, long offset, long length, CancellationToken ct = default)
    {
        int depth = 0;
        for (var node = top; node is not null && node != baseNode; node = FilterOrCowOf(node), depth++)
        {
            if (offset >= node.Length) continue;
            var st = await node.GetBlockStatusAsync(offset, length, ct).ConfigureAwait(false);
            if (st.Length <= 0) return st with { Length = 0 };
            long n = Math.Min(st.Length, length);
            if ((st.Flags & BlockStatusFlags.Allocated) != 0)
                return new BlockStatus(n, BlockStatusFlags.Allocated | (st.Flags & BlockStatusFlags.Zero), Depth: depth);
            length = n;
        }
        return new BlockStatus(length, BlockStatusFlags.None, Depth: depth);
    }

    /// <summary>
    /// bdrv_is_allocated_above(top, NULL, false) as NBD's <c>qemu:allocation-depth</c> reports it:
    /// the 1-based depth of the first layer that holds the range at <paramref name="offset"/>
    /// (1 = <paramref name="top"/>), or 0 when none does, and for how long. Unlike
    /// <see cref="AllocatedAboveAsync"/>, a lower layer the offset lies past holds the range (as
    /// the zeroes synthesized past its end, bdrv_co_common_block_status_above).
    /// </summary>
    public static async ValueTask<(long Length, int Depth)> AllocationDepthAsync(BlockNode top, long offset, long length, CancellationToken ct = default)
    {
        int depth = 1;
        for (var node = top; node is not null; node = FilterOrCowOf(node), depth++)
        {
            if (node != top && offset >= node.Length) return (length, depth);
            var st = await node.GetBlockStatusAsync(offset, length, ct).ConfigureAwait(false);
            if (st.Length <= 0) return (0, 0);
            length = Math.Min(st.Length, length);
            if ((st.Flags & BlockStatusFlags.Allocated) != 0) return (length, depth);
        }
        return (length, 0);
    }

    /// <summary>
    /// The status of <paramref name="node"/>'s own layer, as qemu-img convert asks it with a target
    /// backing file (block status above the source's backing file): what the layer does not hold
    /// reads as zeroes when it has no backing file or lies past the backing file's end; the rest
    /// (neither Zero nor Data) is left to the backing file. Unlike qemu-img 7.2, an unallocated
    /// range is cut at the backing file's end, so the part past it is zeroed too.
    /// </summary>
    public static async ValueTask<BlockStatus> OwnLayerStatusAsync(BlockNode node, long offset, long length, CancellationToken ct = default)
    {
        var status = await node.GetBlockStatusAsync(offset, length, ct).ConfigureAwait(false);
        if ((status.Flags & (BlockStatusFlags.Allocated | BlockStatusFlags.Data | BlockStatusFlags.Zero)) != 0) return status;
        var backing = BackingOf(node);
        if (backing is null && !node.UnallocatedReadsAsZeroes) return status;
        if (backing is null || offset >= backing.Length) return status with { Flags = BlockStatusFlags.Zero };
        return status with { Length = Math.Min(status.Length, backing.Length - offset) };
    }

    /// <summary>True when [offset, offset+length) reads as zeroes by block status alone (no data is read).</summary>
    public static async ValueTask<bool> IsZeroAsync(BlockNode node, long offset, long length, CancellationToken ct = default)
    {
        await foreach (var extent in BlockExtents.WalkAsync(node, offset, length, ExtentScope.Chain, cancellationToken: ct).ConfigureAwait(false))
        {
            if ((extent.Flags & BlockStatusFlags.Zero) == 0) return false;
        }
        return true;
    }
}
