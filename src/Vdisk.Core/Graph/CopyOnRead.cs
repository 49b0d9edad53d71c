using System.Buffers;

namespace Vdisk.Graph;

/// <summary>
/// Copy-on-read (QEMU's BDRV_REQ_COPY_ON_READ, set by <c>qemu-io -C</c> on the top node or by the
/// <c>copy-on-read</c> filter on its child): a read of a range the node does not hold itself
/// copies what it reads from the backing chain into the node, whole clusters at a time, so the
/// next read finds it there. Ranges the node holds are read as they are and never rewritten.
/// </summary>
public static class CopyOnRead
{
    /// <summary>MAX_BOUNCE_BUFFER of block/io.c: the most one copy step reads and writes.</summary>
    public const int MaxBounceBytes = 32768 << 9;

    /// <summary>BDRV_REQUEST_MAX_BYTES: the most one direct read of held data asks for.</summary>
    private const long MaxTransferBytes = 2147483136;

    /// <summary>
    /// bdrv_aligned_preadv with the copy-on-read flag: reads [<paramref name="offset"/>, +length)
    /// of <paramref name="node"/> into <paramref name="buffer"/>, copying what the node does not hold.
    /// </summary>
    public static async ValueTask ReadAsync(BlockNode node, long offset, Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        long length = buffer.Length;
        if (length > 0)
        {
            var own = await node.GetBlockStatusAsync(offset, length, cancellationToken).ConfigureAwait(false);
            if ((own.Flags & BlockStatusFlags.Allocated) != 0 && own.Length >= length)
            {
                await node.ReadAsync(offset, buffer, cancellationToken).ConfigureAwait(false);
                return;
            }
        }
        await CopyAsync(node, offset, buffer, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// bdrv_co_do_copy_on_readv: walks the request rounded out to whole clusters; each stretch the
    /// node does not hold is read (through the backing chain) into a bounce buffer and written
    /// back to the node, as a zero write when it is all zeroes, and the caller's part copied out.
    /// </summary>
    private static async ValueTask CopyAsync(BlockNode node, long offset, Memory<byte> buffer, CancellationToken cancellationToken)
    {
        long length = buffer.Length;
        long cluster = Math.Max(1, node.ClusterSizeForCopy);
        long alignOffset = offset / cluster * cluster;
        long alignEnd = (offset + length + cluster - 1) / cluster * cluster;
        long alignBytes = alignEnd - alignOffset;
        long skip = offset - alignOffset;
        long progress = 0;
        long maxTransfer = Math.Max(cluster, MaxTransferBytes / cluster * cluster);
        byte[]? bounce = null;
        try
        {
            while (alignBytes > 0)
            {
                long want = Math.Min(alignBytes, maxTransfer);
                long available = node.Length - alignOffset;
                // The image ends inside the last cluster: nothing past its end is copied.
                if (available <= 0) break;
                want = Math.Min(want, available);
                long pnum;
                bool held;
                try
                {
                    var status = await node.GetBlockStatusAsync(alignOffset, want, cancellationToken).ConfigureAwait(false);
                    pnum = status.Length <= 0 ? want : Math.Min(status.Length, want);
                    held = (status.Flags & BlockStatusFlags.Allocated) != 0;
                }
                catch (Exception e) when (e is not OperationCanceledException)
                {
                    // As QEMU: treat a failed query as unallocated; the read below reports the error.
                    pnum = want;
                    held = false;
                }

                long part = Math.Min(pnum - skip, length - progress);
                if (!held)
                {
                    pnum = Math.Min(pnum, MaxBounceBytes);
                    part = Math.Min(pnum - skip, length - progress);
                    bounce ??= ArrayPool<byte>.Shared.Rent((int)Math.Min(MaxBounceBytes, alignBytes));
                    var chunk = bounce.AsMemory(0, (int)pnum);
                    await node.ReadAsync(alignOffset, chunk, cancellationToken).ConfigureAwait(false);
                    await node.DebugEventAsync(BlkdebugEvent.CorWrite).ConfigureAwait(false);
                    if (!chunk.Span.ContainsAnyExcept((byte)0))
                        await node.WriteZeroesAsync(alignOffset, pnum, ZeroFlags.None, cancellationToken).ConfigureAwait(false);
                    else
                        await node.WriteAsync(alignOffset, chunk, WriteFlags.None, cancellationToken).ConfigureAwait(false);
                    if (part > 0) chunk.Slice((int)skip, (int)part).CopyTo(buffer[(int)progress..]);
                }
                else if (part > 0)
                {
                    await node.ReadAsync(offset + progress, buffer.Slice((int)progress, (int)part), cancellationToken).ConfigureAwait(false);
                }
                alignOffset += pnum;
                alignBytes -= pnum;
                progress += pnum - skip;
                skip = 0;
            }
        }
        finally
        {
            if (bounce is not null) ArrayPool<byte>.Shared.Return(bounce);
        }
    }
}
