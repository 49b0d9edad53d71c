namespace Vdisk.Graph;

/// <summary>
/// Block status across a backing chain (bdrv_block_status_above): which layer a range comes
/// from and whether it reads as zeroes.
/// </summary>
public static class BlockChain
{
    /// <summary>The backing node of <paramref name="node"/>, or null.</summary>
    public static BlockNode? BackingOf(BlockNode node) => node.Child("backing")?.Node;

    /// <summary>
    /// The status of the range at <paramref name="offset"/> through the chain: Allocated is set
    /// when some layer holds it, Depth says which (0 = <paramref name="top"/>); ranges no layer
    /// holds read as zeroes and report the depth of the bottom layer.
    /// </summary>
    public static async ValueTask<BlockStatus> StatusAboveAsync(BlockNode top, long offset, long length, CancellationToken ct = default)
    {
        var node = top;
        int depth = 0;
        while (true)
        {
            var status = await node.GetBlockStatusAsync(offset, length, ct).ConfigureAwait(false);
            if ((status.Flags & BlockStatusFlags.Allocated) != 0 || status.Length == 0) return status with { Depth = depth };
            var backing = BackingOf(node);
            if (backing is null || offset >= backing.Length)
                return status with { Flags = BlockStatusFlags.Zero, Depth = backing is null ? depth : depth + 1 };
            length = Math.Min(status.Length, backing.Length - offset);
            node = backing;
            depth++;
        }
    }

    /// <summary>True when [offset, offset+length) reads as zeroes by block status alone (no data is read).</summary>
    public static async ValueTask<bool> IsZeroAsync(BlockNode node, long offset, long length, CancellationToken ct = default)
    {
        while (length > 0)
        {
            var status = await StatusAboveAsync(node, offset, length, ct).ConfigureAwait(false);
            if ((status.Flags & BlockStatusFlags.Zero) == 0 || status.Length <= 0) return false;
            long n = Math.Min(status.Length, length);
            offset += n;
            length -= n;
        }
        return true;
    }
}
