using System.Buffers;
using Vdisk.Graph;

namespace Vdisk.Server.Nbd;

/// <summary>
/// Serves valid transmission requests on one export: the node work runs inside the export's
/// request gate (<see cref="GatedAsync"/>), its I/O errors become error replies, and the reply
/// goes out whole. A fault that is not an I/O error propagates: the connection breaks.
/// </summary>
internal sealed class NbdRequestHandler
{
    private readonly NbdSession _session;
    private readonly NbdReplyChannel _replies;
    private readonly NbdPayloadBuffers _buffers;

    public NbdRequestHandler(NbdSession session, NbdReplyChannel replies, NbdPayloadBuffers buffers)
    {
        _session = session;
        _replies = replies;
        _buffers = buffers;
    }

    private NbdExport Export => _session.Export;

    private DiskImage Image => _session.Export.Image;

    /// <summary>Serves one request (validated, with its payload if it is a write) and answers it.</summary>
    public ValueTask HandleAsync(NbdPendingRequest pending, byte[]? payload) => pending.Request.Command switch
    {
        NbdCommand.Read => ReadAsync(pending),
        NbdCommand.BlockStatus => BlockStatusAsync(pending),
        _ => CommandAsync(pending, payload),
    };

    /// <summary>
    /// The one way requests touch the node: inside the export's gate (so that a hand-over waits
    /// for them), with I/O errors turned into the refusal to answer. Anything else escapes.
    /// </summary>
    private async ValueTask<NbdRefusal?> GatedAsync(Func<ValueTask> work)
    {
        await Export.Gate.EnterAsync(CancellationToken.None).ConfigureAwait(false);
        try
        {
            await work().ConfigureAwait(false);
            return null;
        }
        catch (Exception e) when (NbdErrors.Describe(e) is { } refusal)
        {
            return refusal;
        }
        finally
        {
            Export.Gate.Exit();
        }
    }

    // ---------------------------------------------------------------- the handlers

    /// <summary>WRITE, FLUSH, TRIM, WRITE_ZEROES and CACHE: no payload in the reply.</summary>
    private async ValueTask CommandAsync(NbdPendingRequest pending, byte[]? payload)
    {
        var request = pending.Request;
        bool fua = (request.Flags & NbdCommandFlags.Fua) != 0;
        long offset = (long)request.Offset, length = request.Length;
        var image = Image;
        var refusal = await GatedAsync(async () =>
        {
            switch (request.Command)
            {
                case NbdCommand.Write:
                    await image.WriteAsync(offset, payload.AsMemory(0, (int)length), fua ? WriteFlags.Fua : WriteFlags.None).ConfigureAwait(false);
                    break;
                case NbdCommand.Flush:
                    await image.FlushAsync().ConfigureAwait(false);
                    break;
                case NbdCommand.Trim:
                    await image.DiscardAsync(offset, length).ConfigureAwait(false);
                    if (fua) await image.FlushAsync().ConfigureAwait(false);
                    break;
                case NbdCommand.WriteZeroes:
                    var zeroFlags = ZeroFlags.None;
                    if ((request.Flags & NbdCommandFlags.NoHole) == 0) zeroFlags |= ZeroFlags.MayUnmap;
                    if ((request.Flags & NbdCommandFlags.FastZero) != 0) zeroFlags |= ZeroFlags.NoFallback;
                    if (fua) zeroFlags |= ZeroFlags.Fua;
                    await image.WriteZeroesAsync(offset, length, zeroFlags).ConfigureAwait(false);
                    break;
                case NbdCommand.Cache:
                    // A prefetch hint: the page cache does this well enough without help.
                    break;
            }
        }).ConfigureAwait(false);
        if (refusal is { } r) await ReplyErrorAsync(pending, r).ConfigureAwait(false);
        else await ReplySuccessAsync(pending).ConfigureAwait(false);
    }

    private async ValueTask ReadAsync(NbdPendingRequest pending)
    {
        var request = pending.Request;
        int length = (int)request.Length;
        long offset = (long)request.Offset;
        if (length == 0)
        {
            await ReplySuccessAsync(pending, readReply: true).ConfigureAwait(false);
            return;
        }
        var image = Image;
        byte[] buffer = _buffers.Rent(length);
        try
        {
            List<ReadExtent>? extents = null;
            // Zero ranges become hole chunks (as QEMU's sparse reads), unless the client asked
            // for one unfragmented chunk.
            bool sparse = _session.StructuredReplies && (request.Flags & NbdCommandFlags.DontFragment) == 0;
            var refusal = await GatedAsync(async () =>
            {
                if (sparse) extents = await MapReadAsync(image, offset, length).ConfigureAwait(false);
                if (extents is null)
                {
                    await image.ReadAsync(offset, buffer.AsMemory(0, length)).ConfigureAwait(false);
                    return;
                }
                foreach (var e in extents)
                    if (!e.IsHole) await image.ReadAsync(e.Offset, buffer.AsMemory((int)(e.Offset - offset), e.Length)).ConfigureAwait(false);
            }).ConfigureAwait(false);
            if (refusal is { } r)
            {
                await ReplyErrorAsync(pending, r).ConfigureAwait(false);
                return;
            }
            await ReplyReadAsync(pending, buffer, extents).ConfigureAwait(false);
        }
        finally
        {
            _buffers.Return(buffer);
        }
    }

    private readonly record struct ReadExtent(long Offset, int Length, bool IsHole);

    /// <summary>
    /// Data and zero ranges of a read, through the backing chain as QEMU's sparse read sees them;
    /// null when it is all data (the common case, without allocation).
    /// </summary>
    private static async ValueTask<List<ReadExtent>?> MapReadAsync(DiskImage image, long offset, int length)
    {
        List<ReadExtent>? extents = null;
        await foreach (var extent in BlockExtents.WalkAsync(image.Root, offset, length, ExtentScope.Chain).ConfigureAwait(false))
        {
            int n = (int)extent.Length;
            bool hole = (extent.Flags & BlockStatusFlags.Zero) != 0;
            if (extents is null && !hole && extent.End >= offset + length && extent.Offset == offset) return null;
            extents ??= new List<ReadExtent>();
            if (extents.Count > 0 && extents[^1].IsHole == hole)
            {
                var last = extents[^1];
                extents[^1] = last with { Length = last.Length + n };
            }
            else
            {
                extents.Add(new ReadExtent(extent.Offset, n, hole));
            }
        }
        return extents;
    }

    /// <summary>
    /// One BLOCK_STATUS chunk per negotiated context, in QEMU's order (nbd_handle_request):
    /// base:allocation from block status through the chain, qemu:allocation-depth from the layer
    /// holding each range; the last chunk is DONE.
    /// </summary>
    private async ValueTask BlockStatusAsync(NbdPendingRequest pending)
    {
        var request = pending.Request;
        var image = Image;
        bool one = (request.Flags & NbdCommandFlags.RequestOne) != 0;
        var contexts = _session.MetaContexts;
        var collected = new ExtentCollector[contexts.Count];
        for (int i = 0; i < collected.Length; i++) collected[i] = new ExtentCollector(one);
        try
        {
            var refusal = await GatedAsync(async () =>
            {
                for (int i = 0; i < contexts.Count; i++)
                {
                    if (contexts[i] == NbdLimits.AllocationDepthId)
                        await CollectAllocationDepthAsync(image.Root, (long)request.Offset, request.Length, collected[i]).ConfigureAwait(false);
                    else if (contexts[i] >= NbdLimits.DirtyBitmapId)
                        CollectBitmap(_session.Export.Bitmaps[(int)(contexts[i] - NbdLimits.DirtyBitmapId)], (long)request.Offset, request.Length, collected[i]);
                    else
                        await CollectAllocationAsync(image.Root, (long)request.Offset, request.Length, collected[i]).ConfigureAwait(false);
                }
            }).ConfigureAwait(false);
            if (refusal is { } r)
            {
                await ReplyErrorAsync(pending, r).ConfigureAwait(false);
                return;
            }
            if (!pending.TryClaimReply()) return;
            for (int i = 0; i < contexts.Count; i++)
                await SendBlockStatusChunkAsync(pending, contexts[i], collected[i].Extents, done: i == contexts.Count - 1).ConfigureAwait(false);
        }
        finally
        {
            foreach (var c in collected) c.Dispose();
        }
    }

    /// <summary>blockstatus_to_extents: hole and zero flags through the backing chain.</summary>
    private static async ValueTask CollectAllocationAsync(BlockNode root, long offset, uint length, ExtentCollector extents)
    {
        await foreach (var extent in BlockExtents.WalkAsync(root, offset, length, ExtentScope.Chain).ConfigureAwait(false))
        {
            var flags = ((extent.Flags & BlockStatusFlags.Data) == 0 ? NbdAllocationFlags.Hole : NbdAllocationFlags.Data)
                | ((extent.Flags & BlockStatusFlags.Zero) != 0 ? NbdAllocationFlags.Zero : NbdAllocationFlags.Data);
            if (!extents.Add(extent.Length, (uint)flags)) break;
        }
    }

    /// <summary>bitmap_to_extents: runs of clean (0) and dirty (NBD_STATE_DIRTY, 1) granules, clipped to the request.</summary>
    private static void CollectBitmap(DirtyBitmap bitmap, long offset, uint length, ExtentCollector extents)
    {
        long end = offset + length, start = offset;
        foreach (var (dirtyAt, dirtyLength) in bitmap.DirtyRanges())
        {
            long from = Math.Max(dirtyAt, start), to = Math.Min(dirtyAt + dirtyLength, end);
            if (to <= from) continue;
            if (from > start && !extents.Add(from - start, 0)) return;
            if (!extents.Add(to - from, 1)) return;
            start = to;
            if (start >= end) return;
        }
        if (end > start) extents.Add(end - start, 0);
    }

    /// <summary>blockalloc_to_extents: the depth of the layer holding each range (0 = none).</summary>
    private static async ValueTask CollectAllocationDepthAsync(BlockNode root, long offset, uint length, ExtentCollector extents)
    {
        long end = offset + length;
        while (offset < end)
        {
            var (n, depth) = await BlockChain.AllocationDepthAsync(root, offset, end - offset).ConfigureAwait(false);
            if (n <= 0 || !extents.Add(n, (uint)depth)) break;
            offset += n;
        }
    }

    /// <summary>
    /// The extents of one context's reply (nbd_extent_array_add): neighbours with the same value
    /// merge; the array is full at QEMU's limit, or at one extent for NBD_CMD_FLAG_REQ_ONE.
    /// </summary>
    private sealed class ExtentCollector(bool one) : IDisposable
    {
        private NbdExtent[] _extents = ArrayPool<NbdExtent>.Shared.Rent(one ? 1 : 64);
        private int _count;

        public ReadOnlyMemory<NbdExtent> Extents => _extents.AsMemory(0, _count);

        /// <summary>Adds a range; false when the array is full (the reply ends before it).</summary>
        public bool Add(long length, uint flags)
        {
            if (_count > 0 && _extents[_count - 1].Flags == flags && _extents[_count - 1].Length + length <= uint.MaxValue)
            {
                _extents[_count - 1] = new NbdExtent(_extents[_count - 1].Length + (uint)length, flags);
                return true;
            }
            if (_count == NbdLimits.MaxExtents || (one && _count == 1)) return false;
            if (_count == _extents.Length)
            {
                var bigger = ArrayPool<NbdExtent>.Shared.Rent(Math.Min(_extents.Length * 2, NbdLimits.MaxExtents));
                _extents.AsSpan(0, _count).CopyTo(bigger);
                ArrayPool<NbdExtent>.Shared.Return(_extents);
                _extents = bigger;
            }
            _extents[_count++] = new NbdExtent((uint)length, flags);
            return true;
        }

        public void Dispose() => ArrayPool<NbdExtent>.Shared.Return(_extents);
    }

    // ---------------------------------------------------------------- replies

    /// <summary>A success without payload: a simple reply (as QEMU sends), or a NONE chunk for a zero-length structured READ.</summary>
    private async ValueTask ReplySuccessAsync(NbdPendingRequest pending, bool readReply = false)
    {
        if (!pending.TryClaimReply()) return;
        using var lease = await _replies.AcquireAsync(CancellationToken.None).ConfigureAwait(false);
        var header = lease.Header;
        if (readReply && _session.StructuredReplies)
        {
            NbdStructuredReply.WriteNone(header, pending.Request.Cookie);
            await lease.SendAsync(header.AsMemory(0, NbdStructuredReply.HeaderLength), CancellationToken.None).ConfigureAwait(false);
        }
        else
        {
            NbdSimpleReply.Write(header, NbdError.None, pending.Request.Cookie);
            await lease.SendAsync(header.AsMemory(0, NbdSimpleReply.HeaderLength), CancellationToken.None).ConfigureAwait(false);
        }
    }

    /// <summary>Answers a request with an error (see <see cref="ErrorReply"/>).</summary>
    public ValueTask ReplyErrorAsync(NbdPendingRequest pending, NbdRefusal refusal) =>
        pending.TryClaimReply() ? _replies.SendAsync(ErrorReply(_session.StructuredReplies, pending.Request.Cookie, refusal), CancellationToken.None) : ValueTask.CompletedTask;

    /// <summary>An error reply: a structured ERROR chunk with the message, or a simple reply carrying only the number.</summary>
    public static byte[] ErrorReply(bool structured, ulong cookie, NbdRefusal refusal)
    {
        if (structured) return NbdStructuredReply.Error(cookie, refusal.Error, refusal.Message);
        var reply = new byte[NbdSimpleReply.HeaderLength];
        NbdSimpleReply.Write(reply, refusal.Error, cookie);
        return reply;
    }

    /// <summary>A read's data: one simple reply, one data chunk, or data and hole chunks.</summary>
    private async ValueTask ReplyReadAsync(NbdPendingRequest pending, byte[] buffer, List<ReadExtent>? extents)
    {
        if (!pending.TryClaimReply()) return;
        var request = pending.Request;
        int length = (int)request.Length;
        long offset = (long)request.Offset;
        using var lease = await _replies.AcquireAsync(CancellationToken.None).ConfigureAwait(false);
        var header = lease.Header;
        if (!_session.StructuredReplies)
        {
            NbdSimpleReply.Write(header, NbdError.None, request.Cookie);
            await lease.SendAsync(new ArraySegment<byte>(header, 0, NbdSimpleReply.HeaderLength), new ArraySegment<byte>(buffer, 0, length), CancellationToken.None).ConfigureAwait(false);
            return;
        }
        if (extents is null)
        {
            NbdStructuredReply.WriteDataPrefix(header, true, request.Cookie, request.Offset, length);
            await lease.SendAsync(new ArraySegment<byte>(header, 0, NbdStructuredReply.DataPrefixLength), new ArraySegment<byte>(buffer, 0, length), CancellationToken.None).ConfigureAwait(false);
            return;
        }
        for (int i = 0; i < extents.Count; i++)
        {
            var e = extents[i];
            bool done = i == extents.Count - 1;
            if (e.IsHole)
            {
                NbdStructuredReply.WriteHole(header, done, request.Cookie, (ulong)e.Offset, (uint)e.Length);
                await lease.SendAsync(header.AsMemory(0, NbdStructuredReply.HoleLength), CancellationToken.None).ConfigureAwait(false);
            }
            else
            {
                NbdStructuredReply.WriteDataPrefix(header, done, request.Cookie, (ulong)e.Offset, e.Length);
                await lease.SendAsync(new ArraySegment<byte>(header, 0, NbdStructuredReply.DataPrefixLength),
                    new ArraySegment<byte>(buffer, (int)(e.Offset - offset), e.Length), CancellationToken.None).ConfigureAwait(false);
            }
        }
    }

    private async ValueTask SendBlockStatusChunkAsync(NbdPendingRequest pending, uint contextId, ReadOnlyMemory<NbdExtent> extents, bool done)
    {
        int chunkLength = NbdStructuredReply.BlockStatusLength(extents.Length);
        var chunk = ArrayPool<byte>.Shared.Rent(chunkLength);
        try
        {
            NbdStructuredReply.WriteBlockStatus(chunk, done, pending.Request.Cookie, contextId, extents.Span);
            await _replies.SendAsync(chunk.AsMemory(0, chunkLength), CancellationToken.None).ConfigureAwait(false);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(chunk);
        }
    }
}
