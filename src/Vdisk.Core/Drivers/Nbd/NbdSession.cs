using System.Buffers.Binary;
using Vdisk.Native;

namespace Vdisk.Drivers.Nbd;

/// <summary>How one request ended: the server's errno (0 for success) and, for block status, the first extent.</summary>
internal readonly record struct NbdRequestResult(int Errno, uint ExtentLength = 0, uint ExtentFlags = 0);

/// <summary>
/// One negotiated connection in transmission phase. Up to <see cref="NbdWire.MaxRequests"/>
/// requests are in flight; a single reader loop reads every reply, matches it to its request
/// by cookie and puts read data straight into the caller's buffer. A broken connection fails
/// every outstanding request with <see cref="NbdChannelException"/> (may be retried on a new
/// connection) and a reply that breaks the protocol with <see cref="NbdProtocolException"/>
/// (never retried), as QEMU's client distinguishes EIO from EINVAL.
/// </summary>
internal sealed class NbdSession
{
    private readonly NbdChannel _channel;
    private readonly SemaphoreSlim _slots = new(NbdWire.MaxRequests, NbdWire.MaxRequests);
    private readonly SemaphoreSlim _sendLock = new(1, 1);
    private readonly Dictionary<ulong, Pending> _pending = new();
    private readonly Task _reader;
    private ulong _nextCookie;
    private Exception? _broken;

    private NbdSession(NbdChannel channel, NbdExportInfo info)
    {
        _channel = channel;
        Info = info;
        _reader = Task.Run(ReadRepliesAsync);
    }

    /// <summary>What the handshake said about the export.</summary>
    public NbdExportInfo Info { get; }

    /// <summary>True once the connection failed; every request on it fails.</summary>
    public bool IsBroken => Volatile.Read(ref _broken) is not null;

    /// <summary>Connects and negotiates.</summary>
    /// <exception cref="NativeIOException">Connection failed (QEMU's "Failed to connect to ...").</exception>
    /// <exception cref="NbdProtocolException">The handshake failed; the message is QEMU's.</exception>
    /// <exception cref="NbdChannelException">The server went away during the handshake.</exception>
    public static async Task<NbdSession> ConnectAsync(NbdServerAddress address, string export, string? metaContext, CancellationToken ct)
    {
        var socket = await address.ConnectAsync(ct).ConfigureAwait(false);
        var channel = new NbdChannel(socket);
        try
        {
            var info = await NbdHandshake.NegotiateAsync(channel, export, metaContext, ct).ConfigureAwait(false);
            return new NbdSession(channel, info);
        }
        catch
        {
            channel.Dispose();
            throw;
        }
    }

    private sealed class Pending
    {
        public required ushort Command { get; init; }
        public required ulong Offset { get; init; }
        public required uint Length { get; init; }
        public Memory<byte> ReadBuffer { get; init; }
        public int Errno { get; set; }
        public uint ExtentLength { get; set; }
        public uint ExtentFlags { get; set; }
        public bool ExtentReceived { get; set; }
        public TaskCompletionSource<NbdRequestResult> Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    /// <summary>
    /// Sends a request and waits for its whole reply. Once sent, a request is not abandoned on
    /// cancellation (its reply may still write into <paramref name="readInto"/>), as in QEMU.
    /// </summary>
    public async Task<NbdRequestResult> RequestAsync(ushort command, ushort flags, ulong offset, uint length,
        ReadOnlyMemory<byte> payload, Memory<byte> readInto, CancellationToken ct)
    {
        await _slots.WaitAsync(ct).ConfigureAwait(false);
        Pending pending;
        ulong cookie;
        try
        {
            pending = new Pending { Command = command, Offset = offset, Length = length, ReadBuffer = readInto };
            lock (_pending)
            {
                if (_broken is not null) throw Rethrowable(_broken);
                cookie = ++_nextCookie;
                _pending.Add(cookie, pending);
            }
            var header = new byte[NbdWire.RequestSize + (payload.Length <= 4096 ? payload.Length : 0)];
            BinaryPrimitives.WriteUInt32BigEndian(header, NbdWire.RequestMagic);
            BinaryPrimitives.WriteUInt16BigEndian(header.AsSpan(4), flags);
            BinaryPrimitives.WriteUInt16BigEndian(header.AsSpan(6), command);
            BinaryPrimitives.WriteUInt64BigEndian(header.AsSpan(8), cookie);
            BinaryPrimitives.WriteUInt64BigEndian(header.AsSpan(16), offset);
            BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(24), length);
            bool inline = header.Length > NbdWire.RequestSize;
            if (inline) payload.Span.CopyTo(header.AsSpan(NbdWire.RequestSize));
            await _sendLock.WaitAsync(CancellationToken.None).ConfigureAwait(false);
            try
            {
                await _channel.WriteAsync(header, CancellationToken.None).ConfigureAwait(false);
                if (!inline && payload.Length > 0) await _channel.WriteAsync(payload, CancellationToken.None).ConfigureAwait(false);
            }
            catch (NbdChannelException e)
            {
                Break(e);
            }
            finally
            {
                _sendLock.Release();
            }
        }
        catch
        {
            _slots.Release();
            throw;
        }
        try
        {
            return await pending.Done.Task.ConfigureAwait(false);
        }
        finally
        {
            _slots.Release();
        }
    }

    private async Task ReadRepliesAsync()
    {
        var header = new byte[NbdWire.StructuredReplySize];
        try
        {
            while (true)
            {
                await _channel.ReadExactlyAsync(header.AsMemory(0, NbdWire.SimpleReplySize), null, CancellationToken.None).ConfigureAwait(false);
                uint magic = BinaryPrimitives.ReadUInt32BigEndian(header);
                if (magic == NbdWire.SimpleReplyMagic)
                {
                    await ReadSimpleReplyAsync(header).ConfigureAwait(false);
                }
                else if (magic == NbdWire.StructuredReplyMagic)
                {
                    await _channel.ReadExactlyAsync(header.AsMemory(NbdWire.SimpleReplySize, 4), null, CancellationToken.None).ConfigureAwait(false);
                    await ReadChunkAsync(header).ConfigureAwait(false);
                }
                else
                {
                    throw new NbdProtocolException($"invalid magic (got 0x{magic:x})", Errno.EIO);
                }
            }
        }
        catch (Exception e) when (e is NbdChannelException or NbdProtocolException)
        {
            Break(e);
        }
    }

    private Pending Find(ulong cookie)
    {
        lock (_pending)
        {
            return _pending.GetValueOrDefault(cookie) ?? throw new NbdProtocolException("unexpected cookie value", Errno.EIO);
        }
    }

    private void Complete(ulong cookie, Pending pending, NbdRequestResult result)
    {
        lock (_pending) _pending.Remove(cookie);
        pending.Done.TrySetResult(result);
    }

    private async Task ReadSimpleReplyAsync(byte[] header)
    {
        uint error = BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(4));
        ulong cookie = BinaryPrimitives.ReadUInt64BigEndian(header.AsSpan(8));
        var pending = Find(cookie);
        if (Info.StructuredReplies && pending.Command == NbdWire.CmdRead)
            throw new NbdProtocolException("Protocol error: simple reply when structured reply chunk was expected");
        int errno = NbdWire.ToSystemErrno(error);
        if (errno == 0 && pending.Command == NbdWire.CmdRead)
            await _channel.ReadExactlyAsync(pending.ReadBuffer, null, CancellationToken.None).ConfigureAwait(false);
        if (errno == 0 && pending.Command == NbdWire.CmdBlockStatus) errno = Errno.EIO; // "Server did not reply with any status extents"
        Complete(cookie, pending, new NbdRequestResult(errno));
    }

    private async Task ReadChunkAsync(byte[] header)
    {
        if (!Info.StructuredReplies) throw new NbdProtocolException("Unexpected structured reply", Errno.EIO);
        ushort flags = BinaryPrimitives.ReadUInt16BigEndian(header.AsSpan(4));
        ushort type = BinaryPrimitives.ReadUInt16BigEndian(header.AsSpan(6));
        ulong cookie = BinaryPrimitives.ReadUInt64BigEndian(header.AsSpan(8));
        uint length = BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(16));
        var pending = Find(cookie);
        bool done = (flags & NbdWire.ReplyFlagDone) != 0;

        if (type == NbdWire.ChunkNone)
        {
            if (!done) throw new NbdProtocolException("Protocol error: NBD_REPLY_TYPE_NONE chunk without NBD_REPLY_FLAG_DONE flag set");
            if (length != 0) throw new NbdProtocolException("Protocol error: NBD_REPLY_TYPE_NONE chunk with nonzero length");
        }
        else if (type == NbdWire.ChunkOffsetData && pending.Command == NbdWire.CmdRead)
        {
            if (length <= 8) throw new NbdProtocolException("Protocol error: invalid payload for NBD_REPLY_TYPE_OFFSET_DATA");
            ulong offset = await _channel.ReadUInt64Async("OFFSET_DATA offset", CancellationToken.None).ConfigureAwait(false);
            ulong size = length - 8UL;
            if (offset < pending.Offset || size > pending.Length || offset - pending.Offset > pending.Length - size)
                throw new NbdProtocolException("Protocol error: server sent chunk exceeding requested region");
            await _channel.ReadExactlyAsync(pending.ReadBuffer.Slice((int)(offset - pending.Offset), (int)size), null, CancellationToken.None)
                .ConfigureAwait(false);
        }
        else if (NbdWire.IsErrorChunk(type) || type == NbdWire.ChunkOffsetHole || type == NbdWire.ChunkBlockStatus)
        {
            if (length > NbdWire.MaxMallocPayload) throw new NbdProtocolException("Payload too large");
            var payload = new byte[length];
            await _channel.ReadExactlyAsync(payload, "structured payload", CancellationToken.None).ConfigureAwait(false);
            if (NbdWire.IsErrorChunk(type)) ParseError(pending, payload);
            else if (type == NbdWire.ChunkOffsetHole && pending.Command == NbdWire.CmdRead) ParseHole(pending, payload);
            else if (type == NbdWire.ChunkBlockStatus && pending.Command == NbdWire.CmdBlockStatus) ParseBlockStatus(pending, payload);
            else throw UnexpectedType(type, pending);
        }
        else
        {
            throw UnexpectedType(type, pending);
        }

        if (done || type == NbdWire.ChunkNone)
        {
            int errno = pending.Errno;
            if (errno == 0 && pending.Command == NbdWire.CmdBlockStatus && !pending.ExtentReceived) errno = Errno.EIO;
            Complete(cookie, pending, new NbdRequestResult(errno, pending.ExtentLength, pending.ExtentFlags));
        }
    }

    private static NbdProtocolException UnexpectedType(ushort type, Pending pending)
    {
        string command = pending.Command switch
        {
            NbdWire.CmdRead => "CMD_READ",
            NbdWire.CmdBlockStatus => "CMD_BLOCK_STATUS",
            _ => "command",
        };
        return new NbdProtocolException($"Unexpected reply type: {type} ({NbdWire.ChunkName(type)}) for {command}");
    }

    private static void ParseError(Pending pending, byte[] payload)
    {
        if (payload.Length < 6) throw new NbdProtocolException("Protocol error: invalid payload for structured error");
        uint error = BinaryPrimitives.ReadUInt32BigEndian(payload);
        if (error == 0) throw new NbdProtocolException("Protocol error: server sent structured error chunk with error = 0");
        ushort messageLength = BinaryPrimitives.ReadUInt16BigEndian(payload.AsSpan(4));
        if (messageLength > payload.Length - 6)
            throw new NbdProtocolException("Protocol error: server sent structured error chunk with incorrect message size");
        if (pending.Errno == 0) pending.Errno = NbdWire.ToSystemErrno(error);
    }

    private static void ParseHole(Pending pending, byte[] payload)
    {
        if (payload.Length != 12) throw new NbdProtocolException("Protocol error: invalid payload for NBD_REPLY_TYPE_OFFSET_HOLE");
        ulong offset = BinaryPrimitives.ReadUInt64BigEndian(payload);
        uint size = BinaryPrimitives.ReadUInt32BigEndian(payload.AsSpan(8));
        if (size == 0 || offset < pending.Offset || size > pending.Length || offset - pending.Offset > pending.Length - size)
            throw new NbdProtocolException("Protocol error: server sent chunk exceeding requested region");
        pending.ReadBuffer.Span.Slice((int)(offset - pending.Offset), (int)size).Clear();
    }

    private void ParseBlockStatus(Pending pending, byte[] payload)
    {
        if (pending.ExtentReceived) throw new NbdProtocolException("Several BLOCK_STATUS chunks in reply");
        if (payload.Length < 12) throw new NbdProtocolException("Protocol error: invalid payload for NBD_REPLY_TYPE_BLOCK_STATUS");
        uint context = BinaryPrimitives.ReadUInt32BigEndian(payload);
        if (context != Info.BaseAllocationId)
        {
            throw new NbdProtocolException($"Protocol error: unexpected context id {context} for NBD_REPLY_TYPE_BLOCK_STATUS, " +
                $"when negotiated context id is {Info.BaseAllocationId}");
        }
        uint extentLength = BinaryPrimitives.ReadUInt32BigEndian(payload.AsSpan(4));
        uint extentFlags = BinaryPrimitives.ReadUInt32BigEndian(payload.AsSpan(8));
        if (extentLength == 0) throw new NbdProtocolException("Protocol error: server sent status chunk with zero length");
        // Like QEMU: an unaligned extent from a server that rounds its size (qemu-nbd 3.1) is
        // cut back to the alignment, or widened to one block reported as data.
        uint min = Info.MinBlock;
        if (min > 1 && extentLength % min != 0)
        {
            if (extentLength > min)
            {
                extentLength -= extentLength % min;
            }
            else
            {
                extentLength = min;
                extentFlags = 0;
            }
        }
        pending.ExtentLength = Math.Min(extentLength, pending.Length);
        pending.ExtentFlags = extentFlags;
        pending.ExtentReceived = true;
    }

    /// <summary>Marks the connection failed: every outstanding and later request fails with <paramref name="reason"/>.</summary>
    private void Break(Exception reason)
    {
        List<Pending> outstanding;
        lock (_pending)
        {
            _broken ??= reason;
            outstanding = _pending.Values.ToList();
            _pending.Clear();
        }
        _channel.Shutdown();
        foreach (var p in outstanding) p.Done.TrySetException(Rethrowable(reason));
    }

    private static Exception Rethrowable(Exception reason) => reason switch
    {
        NbdProtocolException p => new NbdProtocolException(p.Message, p.Errno),
        _ => new NbdChannelException(reason.Message),
    };

    /// <summary>NBD_CMD_DISC as a courtesy, then the socket is closed.</summary>
    public async ValueTask CloseAsync()
    {
        if (!IsBroken)
        {
            var header = new byte[NbdWire.RequestSize];
            BinaryPrimitives.WriteUInt32BigEndian(header, NbdWire.RequestMagic);
            BinaryPrimitives.WriteUInt16BigEndian(header.AsSpan(6), NbdWire.CmdDisconnect);
            await _sendLock.WaitAsync().ConfigureAwait(false);
            try
            {
                await _channel.WriteAsync(header, CancellationToken.None).ConfigureAwait(false);
            }
            catch (NbdChannelException)
            {
                // Gone already.
            }
            finally
            {
                _sendLock.Release();
            }
        }
        Break(new NbdChannelException("Connection closed"));
        try
        {
            await _reader.ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException)
        {
            // The reader ends with the socket.
        }
        _channel.Dispose();
    }
}
