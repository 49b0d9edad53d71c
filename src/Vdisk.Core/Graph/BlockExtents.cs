using System.Runtime.CompilerServices;
using Vdisk.Native;

namespace Vdisk.Graph;

/// <summary>One answer of a block-status walk: <see cref="Length"/> bytes at <see cref="Offset"/> sharing one status.</summary>
/// <param name="Offset">Guest offset of the first byte.</param>
/// <param name="Length">Bytes (always &gt; 0).</param>
/// <param name="Flags">Data, zero, allocated.</param>
/// <param name="Depth">Backing-chain depth the status came from (0 = the walked node).</param>
/// <param name="HostOffset">Where the data lives in <paramref name="HostNode"/>, when known.</param>
/// <param name="HostNode">The protocol node holding the data, when known.</param>
public readonly record struct Extent(long Offset, long Length, BlockStatusFlags Flags, int Depth = 0, long? HostOffset = null, BlockNode? HostNode = null)
{
    /// <summary>The first byte after the extent.</summary>
    public long End => Offset + Length;

    /// <summary>The extent as a <see cref="BlockStatus"/> (what one status query would answer).</summary>
    public BlockStatus Status => new(Length, Flags, HostOffset, HostNode, Depth);
}

/// <summary>Which layers a walk asks.</summary>
public enum ExtentScope
{
    /// <summary>The node's own layer only (bdrv_block_status): unallocated ranges stay unallocated.</summary>
    Node,
    /// <summary>Through the backing chain (bdrv_block_status_above with no base).</summary>
    Chain,
    /// <summary>The node's own layer over its backing file (<see cref="BlockChain.OwnLayerStatusAsync"/>).</summary>
    OwnLayer,
    /// <summary>Allocation from the node down to a base, excluded (<see cref="BlockChain.AllocatedAboveAsync"/>).</summary>
    AllocatedAbove,
}

/// <summary>
/// The one block-status walk: every tool that lists what a range holds (map, compare, measure,
/// convert, NBD block status, qemu-io map, commit, rebase) iterates this instead of looping over
/// status queries itself.
/// </summary>
/// <remarks>
/// <para><b>Zero-length and failed answers.</b> QEMU's bdrv_co_block_status answers 0 bytes only
/// at end of file (BDRV_BLOCK_EOF); bdrv_co_common_block_status_above turns a backing layer's EOF
/// into "zeroes, allocated at that layer" for the rest of the range, which
/// <see cref="BlockChain.StatusAboveAsync"/> does. Inside the walked node's length a 0-byte answer
/// therefore never happens in QEMU: img_map and img_compare <c>assert(pnum)</c>, and qemu-io's
/// map_f reports it as "Unexpected end of image" with -EIO. The walk does the same without
/// crashing: a 0-byte (or negative) answer inside the range ends the walk with
/// <see cref="NativeIOException"/> EIO "Unexpected end of image". An answer longer than asked
/// is cut to the range. A failed query (any exception) ends the walk with that exception, as
/// every QEMU caller returns the error (img_map "Could not read file metadata", img_compare
/// "Sector allocation test failed", convert_iteration_sectors "error while reading block
/// status", nbd/server.c's blockstatus_to_extents passes it to the reply).</para>
/// <para>The walk never merges answers: callers merge by what they print (map by depth, flags
/// and host offset; NBD by its two flags; qemu-io by allocation).</para>
/// </remarks>
public static class BlockExtents
{
    /// <summary>The message of a 0-byte answer inside the range (qemu-io's map_f wording).</summary>
    public const string UnexpectedEnd = "Unexpected end of image";

    /// <summary>
    /// The extents of [<paramref name="offset"/>, <paramref name="offset"/> + <paramref name="length"/>)
    /// of <paramref name="node"/>, in order, covering the range exactly once. Each query asks for at
    /// most <paramref name="queryLimit"/> bytes (QEMU's callers cap some queries, e.g. img_map's 1 GiB).
    /// <paramref name="baseNode"/> is where <see cref="ExtentScope.AllocatedAbove"/> stops (null: the whole chain).
    /// </summary>
    public static async IAsyncEnumerable<Extent> WalkAsync(BlockNode node, long offset, long length, ExtentScope scope,
        long queryLimit = long.MaxValue, [EnumeratorCancellation] CancellationToken cancellationToken = default, BlockNode? baseNode = null)
    {
        long end = offset + length;
        for (long position = offset; position < end;)
        {
            cancellationToken.ThrowIfCancellationRequested();
            long want = Math.Min(end - position, queryLimit);
            var status = scope switch
            {
                ExtentScope.Chain => await BlockChain.StatusAboveAsync(node, position, want, cancellationToken).ConfigureAwait(false),
                ExtentScope.AllocatedAbove => await BlockChain.AllocatedAboveAsync(node, baseNode, position, want, cancellationToken).ConfigureAwait(false),
                ExtentScope.OwnLayer => await BlockChain.OwnLayerStatusAsync(node, position, want, cancellationToken).ConfigureAwait(false),
                _ => await node.GetBlockStatusAsync(position, want, cancellationToken).ConfigureAwait(false),
            };
            if (status.Length <= 0) throw new NativeIOException(Errno.EIO, UnexpectedEnd);
            long n = Math.Min(status.Length, want);
            yield return new Extent(position, n, status.Flags, status.Depth, status.HostOffset, status.HostNode);
            position += n;
        }
    }
}
