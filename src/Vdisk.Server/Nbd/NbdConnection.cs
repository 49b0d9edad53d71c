using System.Buffers;
using System.Net.Sockets;
using Vdisk.Graph;
using Vdisk.Native;

namespace Vdisk.Server.Nbd;

/// <summary>Where a connection is in the protocol.</summary>
public enum NbdConnectionState
{
    /// <summary>Greeting sent, waiting for the client's flags.</summary>
    Greeting,
    /// <summary>Option haggling.</summary>
    Negotiating,
    /// <summary>Serving requests on one export.</summary>
    Transmitting,
    /// <summary>Done: no more requests are read.</summary>
    Closed,
}

/// <summary>
/// One client of the NBD server, as an explicit state machine: greeting, option haggling
/// (<see cref="NegotiateAsync"/>), transmission (<see cref="TransmitAsync"/>), closed.
/// Requests are read one after another and served concurrently; replies go out whole through
/// <see cref="NbdReplyChannel"/>, in completion order. Protocol violations that leave the
/// stream unreadable (bad magic, a write too large to skip) end the connection; everything
/// else gets an error reply and the connection goes on.
/// </summary>
public sealed class NbdConnection
{
    /// <summary>Requests a connection serves at once; more wait in the socket.</summary>
    public const int MaxInFlight = 64;

    /// <summary>
    /// Payload bytes (write data read, read data to send) a connection may have in flight: a
    /// client cannot make the daemon hold 64 × 32 MiB. A request larger than what is free waits
    /// in the socket until earlier ones finish (one always fits when nothing else is in flight).
    /// </summary>
    public const long MaxInFlightBytes = 64L * 1024 * 1024;

    private static readonly TimeSpan s_shutdownGrace = TimeSpan.FromSeconds(30);

    private readonly NbdServer _server;
    private readonly Socket _socket;
    private readonly NbdSocketReader _reader;
    private readonly NbdReplyChannel _replies;
    private readonly CancellationTokenSource _abort;
    private readonly SemaphoreSlim _slots = new(MaxInFlight, MaxInFlight);
    private readonly TaskCompletionSource _idle = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _inFlight = 1; // the receive loop itself, so that idle means "loop ended and nothing pending"
    private readonly Lock _budgetLock = new();
    private long _budgetUsed;
    private TaskCompletionSource? _budgetWaiter;

    private bool _structuredReplies;
    private bool _noZeroes;
    private string? _metaContextExport;
    private bool _baseAllocationSelected;
    private NbdExport? _export;
    private long _size;

    internal NbdConnection(NbdServer server, Socket socket, CancellationToken serverStopping)
    {
        _server = server;
        _socket = socket;
        _reader = new NbdSocketReader(socket);
        _replies = new NbdReplyChannel(socket);
        _abort = CancellationTokenSource.CreateLinkedTokenSource(serverStopping);
    }

    /// <summary>The protocol state.</summary>
    public NbdConnectionState State { get; private set; } = NbdConnectionState.Greeting;

    /// <summary>The export in use during transmission.</summary>
    public NbdExport? Export => _export;

    /// <summary>Stops reading requests; requests in flight still complete and reply.</summary>
    public void Abort()
    {
        try
        {
            _abort.Cancel();
        }
        catch (ObjectDisposedException) { }
    }

    internal async Task RunAsync()
    {
        var token = _abort.Token;
        try
        {
            var greeting = new byte[NbdGreeting.Length];
            NbdGreeting.Write(greeting);
            await _replies.SendAsync(greeting, token).ConfigureAwait(false);
            var flags = new byte[NbdGreeting.ClientFlagsLength];
            await _reader.ReadExactlyAsync(flags, token).ConfigureAwait(false);
            if (!NbdGreeting.TryReadClientFlags(flags, out var clientFlags)) return;
            _noZeroes = (clientFlags & NbdHandshakeFlags.NoZeroes) != 0;

            State = NbdConnectionState.Negotiating;
            if (!await NegotiateAsync(token).ConfigureAwait(false)) return;

            State = NbdConnectionState.Transmitting;
            await TransmitAsync(token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is EndOfStreamException or SocketException or OperationCanceledException or IOException or ObjectDisposedException)
        {
            // The client went away or the server is stopping: nothing to answer.
        }
        finally
        {
            State = NbdConnectionState.Closed;
            if (Interlocked.Decrement(ref _inFlight) == 0) _idle.TrySetResult();
            // Requests already read still finish and answer; a client that stops reading its
            // replies cannot hold the shutdown up for ever.
            await _idle.Task.WaitAsync(s_shutdownGrace).ContinueWith(static _ => { }, TaskScheduler.Default).ConfigureAwait(false);
            _export?.RemoveClient(this);
            try
            {
                _socket.Shutdown(SocketShutdown.Both);
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException) { }
            _socket.Dispose();
            _abort.Dispose();
        }
    }

    // ---------------------------------------------------------------- option haggling

    /// <summary>Answers options until one starts transmission (true) or the session ends (false).</summary>
    private async Task<bool> NegotiateAsync(CancellationToken token)
    {
        var header = new byte[NbdOptionRequest.HeaderLength];
        while (true)
        {
            await _reader.ReadExactlyAsync(header, token).ConfigureAwait(false);
            if (!NbdOptionRequest.TryRead(header, out var option)) return false;
            if (option.Length > NbdLimits.MaxOptionLength)
            {
                if (option.Length > NbdLimits.MaxDiscardedOptionLength) return false;
                await _reader.SkipAsync(option.Length, token).ConfigureAwait(false);
                await ReplyAsync(NbdOptionReply.Error(option.Option, NbdOptionReplyType.ErrTooBig,
                    $"option '{NbdOptionRequest.Name(option.Option)}' length {option.Length} exceeds {NbdLimits.MaxOptionLength}"), token).ConfigureAwait(false);
                continue;
            }
            var data = new byte[option.Length];
            await _reader.ReadExactlyAsync(data, token).ConfigureAwait(false);
            var outcome = await HandleOptionAsync(option.Option, data, token).ConfigureAwait(false);
            if (outcome != OptionOutcome.Continue) return outcome == OptionOutcome.Transmit;
        }
    }

    private enum OptionOutcome
    {
        Continue,
        Transmit,
        Close,
    }

    private async ValueTask<OptionOutcome> HandleOptionAsync(NbdOption option, byte[] data, CancellationToken token)
    {
        switch (option)
        {
            case NbdOption.ExportName:
            {
                if (!NbdInfoRequest.TryDecodeName(data, out string name, out _) || data.Length > NbdLimits.MaxString) return OptionOutcome.Close;
                var export = _server.FindExport(name);
                // This option cannot fail politely: the protocol says to hang up.
                if (export is null || !StartTransmission(export)) return OptionOutcome.Close;
                var reply = NbdExportNameReply.Create((ulong)_size, export.TransmissionFlags(_structuredReplies, _server.MultiConn), _noZeroes);
                await _replies.SendAsync(reply, token).ConfigureAwait(false);
                return OptionOutcome.Transmit;
            }
            case NbdOption.Abort:
                await ReplyAsync(NbdOptionReply.Ack(option), token).ConfigureAwait(false);
                return OptionOutcome.Close;
            case NbdOption.List:
                if (data.Length != 0) return await InvalidAsync(option, "option 'list' has unexpected length", token).ConfigureAwait(false);
                foreach (var export in _server.Exports)
                    await ReplyAsync(NbdOptionReply.Server(export.Name, export.Description), token).ConfigureAwait(false);
                await ReplyAsync(NbdOptionReply.Ack(option), token).ConfigureAwait(false);
                return OptionOutcome.Continue;
            case NbdOption.StartTls:
                await ReplyAsync(NbdOptionReply.Error(option, NbdOptionReplyType.ErrPolicy, "TLS not configured"), token).ConfigureAwait(false);
                return OptionOutcome.Continue;
            case NbdOption.Info:
            case NbdOption.Go:
                return await HandleInfoAsync(option, data, token).ConfigureAwait(false);
            case NbdOption.StructuredReply:
                if (data.Length != 0) return await InvalidAsync(option, "option 'structured reply' has unexpected length", token).ConfigureAwait(false);
                if (_structuredReplies) return await InvalidAsync(option, "structured reply already negotiated", token).ConfigureAwait(false);
                _structuredReplies = true;
                await ReplyAsync(NbdOptionReply.Ack(option), token).ConfigureAwait(false);
                return OptionOutcome.Continue;
            case NbdOption.ListMetaContext:
            case NbdOption.SetMetaContext:
                return await HandleMetaContextAsync(option, data, token).ConfigureAwait(false);
            default:
                await ReplyAsync(NbdOptionReply.Error(option, NbdOptionReplyType.ErrUnsupported,
                    $"Unsupported option {(uint)option} ({NbdOptionRequest.Name(option)})"), token).ConfigureAwait(false);
                return OptionOutcome.Continue;
        }
    }

    private async ValueTask<OptionOutcome> HandleInfoAsync(NbdOption option, byte[] data, CancellationToken token)
    {
        if (!NbdInfoRequest.TryParse(option, data, out var request, out string? error))
            return await InvalidAsync(option, error!, token).ConfigureAwait(false);
        var export = _server.FindExport(request!.ExportName);
        if (export is null)
        {
            await ReplyAsync(NbdOptionReply.Error(option, NbdOptionReplyType.ErrUnknown, $"export '{request.ExportName}' not present"), token).ConfigureAwait(false);
            return OptionOutcome.Continue;
        }
        if (request.Requested.Contains(NbdInfoType.Name))
            await ReplyAsync(NbdOptionReply.InfoText(option, NbdInfoType.Name, export.Name), token).ConfigureAwait(false);
        if (request.Requested.Contains(NbdInfoType.Description) && export.Description is not null)
            await ReplyAsync(NbdOptionReply.InfoText(option, NbdInfoType.Description, export.Description), token).ConfigureAwait(false);
        // Block sizes go out whether asked for or not, as qemu-nbd does.
        await ReplyAsync(NbdOptionReply.InfoBlockSize(option, 1, NbdLimits.PreferredBlockSize, NbdLimits.MaxPayload), token).ConfigureAwait(false);
        long size = export.Image.Length;
        await ReplyAsync(NbdOptionReply.InfoExport(option, (ulong)size, export.TransmissionFlags(_structuredReplies, _server.MultiConn)), token).ConfigureAwait(false);
        if (option == NbdOption.Info)
        {
            await ReplyAsync(NbdOptionReply.Ack(option), token).ConfigureAwait(false);
            return OptionOutcome.Continue;
        }
        if (!StartTransmission(export))
        {
            await ReplyAsync(NbdOptionReply.Error(option, NbdOptionReplyType.ErrShutdown, $"export '{export.Name}' is shutting down"), token).ConfigureAwait(false);
            return OptionOutcome.Continue;
        }
        await ReplyAsync(NbdOptionReply.Ack(option), token).ConfigureAwait(false);
        return OptionOutcome.Transmit;
    }

    private async ValueTask<OptionOutcome> HandleMetaContextAsync(NbdOption option, byte[] data, CancellationToken token)
    {
        if (!_structuredReplies)
            return await InvalidAsync(option, $"request option '{NbdOptionRequest.Name(option)}' when structured reply is not negotiated", token).ConfigureAwait(false);
        if (!NbdMetaContextRequest.TryParse(option, data, out var request, out string? error))
            return await InvalidAsync(option, error!, token).ConfigureAwait(false);
        if (_server.FindExport(request!.ExportName) is null)
        {
            await ReplyAsync(NbdOptionReply.Error(option, NbdOptionReplyType.ErrUnknown, $"export '{request.ExportName}' not present"), token).ConfigureAwait(false);
            return OptionOutcome.Continue;
        }
        bool listing = option == NbdOption.ListMetaContext;
        var selected = request.Select(listing);
        if (!listing)
        {
            _metaContextExport = request.ExportName;
            _baseAllocationSelected = selected.Count > 0;
        }
        // One context, id 0 (the id QEMU gives base:allocation); LIST replies carry 0 by rule.
        foreach (var name in selected)
            await ReplyAsync(NbdOptionReply.MetaContext(option, 0, name), token).ConfigureAwait(false);
        await ReplyAsync(NbdOptionReply.Ack(option), token).ConfigureAwait(false);
        return OptionOutcome.Continue;
    }

    private bool StartTransmission(NbdExport export)
    {
        if (!export.TryAddClient(this)) return false;
        _export = export;
        _size = export.Image.Length;
        // Contexts were selected for one export; going to another drops them.
        if (_metaContextExport != export.Name) _baseAllocationSelected = false;
        return true;
    }

    private async ValueTask<OptionOutcome> InvalidAsync(NbdOption option, string message, CancellationToken token)
    {
        await ReplyAsync(NbdOptionReply.Error(option, NbdOptionReplyType.ErrInvalid, message), token).ConfigureAwait(false);
        return OptionOutcome.Continue;
    }

    private ValueTask ReplyAsync(byte[] reply, CancellationToken token) => _replies.SendAsync(reply, token);

    // ---------------------------------------------------------------- transmission

    private async Task TransmitAsync(CancellationToken token)
    {
        var header = new byte[NbdRequest.HeaderLength];
        while (true)
        {
            await _reader.ReadExactlyAsync(header, token).ConfigureAwait(false);
            if (!NbdRequest.TryRead(header, out var request)) return; // lost framing: hard disconnect
            if (request.Command == NbdCommand.Disconnect) return;

            byte[]? payload = null;
            long charge = 0;
            if (request.Command == NbdCommand.Write)
            {
                if (request.Length > NbdLimits.MaxPayload)
                {
                    // The payload cannot be skipped safely: answer, then hang up.
                    await ReplyErrorAsync(request, NbdError.Invalid, TooLarge(request.Length)).ConfigureAwait(false);
                    return;
                }
                charge = request.Length;
                await AcquireBudgetAsync(charge, token).ConfigureAwait(false);
                payload = ArrayPool<byte>.Shared.Rent((int)request.Length);
                try
                {
                    await _reader.ReadExactlyAsync(payload.AsMemory(0, (int)request.Length), token).ConfigureAwait(false);
                }
                catch
                {
                    ArrayPool<byte>.Shared.Return(payload);
                    ReleaseBudget(charge);
                    throw;
                }
            }

            if (Validate(request) is { } invalid)
            {
                if (payload is not null) ArrayPool<byte>.Shared.Return(payload);
                ReleaseBudget(charge);
                await ReplyErrorAsync(request, invalid.Error, invalid.Message).ConfigureAwait(false);
                continue;
            }

            if (request.Command == NbdCommand.Read)
            {
                charge = request.Length;
                await AcquireBudgetAsync(charge, token).ConfigureAwait(false);
            }
            await _slots.WaitAsync(token).ConfigureAwait(false);
            Interlocked.Increment(ref _inFlight);
            _ = ServeAsync(request, payload, charge);
        }
    }

    private readonly record struct Refusal(NbdError Error, string Message);

    // QEMU 7.2's wording, stray space before ")" included, reproduced on purpose: clients see the
    // same text from vdisk serve as from qemu-storage-daemon (pinned by ServeRobustnessTests).
    private static string TooLarge(uint length) => $"len ({length} ) is larger than max len ({NbdLimits.MaxPayload})";

    /// <summary>QEMU's nbd_co_receive_request checks, with the errors the protocol asks for.</summary>
    private Refusal? Validate(in NbdRequest request)
    {
        var valid = NbdCommandFlags.Fua;
        switch (request.Command)
        {
            case NbdCommand.Read:
                if (_structuredReplies) valid |= NbdCommandFlags.DontFragment;
                break;
            case NbdCommand.Write:
            case NbdCommand.Flush:
            case NbdCommand.Trim:
            case NbdCommand.Cache:
                break;
            case NbdCommand.WriteZeroes:
                valid |= NbdCommandFlags.NoHole | NbdCommandFlags.FastZero;
                break;
            case NbdCommand.BlockStatus:
                valid |= NbdCommandFlags.RequestOne;
                break;
            default:
                return new(NbdError.Invalid, $"invalid request type ({(ushort)request.Command}) received");
        }
        if ((request.Flags & ~valid) != 0)
            return new(NbdError.Invalid, $"unsupported flags for command {NbdRequest.Name(request.Command)} (got 0x{(ushort)request.Flags:x})");
        if (request.Command == NbdCommand.Read && request.Length > NbdLimits.MaxPayload)
            return new(NbdError.Invalid, TooLarge(request.Length));
        bool writes = request.Command is NbdCommand.Write or NbdCommand.Trim or NbdCommand.WriteZeroes;
        if (writes && !_export!.Writable) return new(NbdError.Perm, "Export is read-only");
        if (request.Command != NbdCommand.Flush &&
            (request.Offset > (ulong)_size || request.Length > (ulong)_size - request.Offset))
        {
            var error = request.Command is NbdCommand.Write or NbdCommand.WriteZeroes ? NbdError.NoSpace : NbdError.Invalid;
            return new(error, $"operation past EOF; From: {request.Offset}, Len: {request.Length}, Size: {_size}");
        }
        if (request.Command == NbdCommand.BlockStatus)
        {
            if (!_baseAllocationSelected) return new(NbdError.Invalid, "No meta contexts negotiated");
            if (request.Length == 0) return new(NbdError.Invalid, "need non-zero length");
        }
        return null;
    }

    private async ValueTask AcquireBudgetAsync(long bytes, CancellationToken token)
    {
        while (true)
        {
            TaskCompletionSource waiter;
            lock (_budgetLock)
            {
                if (_budgetUsed == 0 || _budgetUsed + bytes <= MaxInFlightBytes)
                {
                    _budgetUsed += bytes;
                    return;
                }
                // Only the receive loop acquires, so there is at most one waiter.
                waiter = _budgetWaiter = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            }
            await waiter.Task.WaitAsync(token).ConfigureAwait(false);
        }
    }

    private void ReleaseBudget(long bytes)
    {
        if (bytes == 0) return;
        TaskCompletionSource? waiter;
        lock (_budgetLock)
        {
            _budgetUsed -= bytes;
            waiter = _budgetWaiter;
            _budgetWaiter = null;
        }
        waiter?.TrySetResult();
    }

    private async Task ServeAsync(NbdRequest request, byte[]? payload, long charge)
    {
        try
        {
            if (request.Command == NbdCommand.Read) await ServeReadAsync(request).ConfigureAwait(false);
            else if (request.Command == NbdCommand.BlockStatus) await ServeBlockStatusAsync(request).ConfigureAwait(false);
            else await ServeOtherAsync(request, payload).ConfigureAwait(false);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException or IOException or OperationCanceledException)
        {
            // The reply could not be sent: the client is gone.
        }
        finally
        {
            if (payload is not null) ArrayPool<byte>.Shared.Return(payload);
            ReleaseBudget(charge);
            _slots.Release();
            if (Interlocked.Decrement(ref _inFlight) == 0) _idle.TrySetResult();
        }
    }

    private async ValueTask ServeOtherAsync(NbdRequest request, byte[]? payload)
    {
        var image = _export!.Image;
        bool fua = (request.Flags & NbdCommandFlags.Fua) != 0;
        long offset = (long)request.Offset, length = request.Length;
        Refusal? failure = null;
        await _export.Gate.EnterAsync(CancellationToken.None).ConfigureAwait(false);
        try
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
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            failure = Describe(e);
        }
        finally
        {
            _export.Gate.Exit();
        }
        if (failure is { } f) await ReplyErrorAsync(request, f.Error, f.Message).ConfigureAwait(false);
        else await ReplySuccessAsync(request.Cookie).ConfigureAwait(false);
    }

    private async ValueTask ServeReadAsync(NbdRequest request)
    {
        int length = (int)request.Length;
        long offset = (long)request.Offset;
        if (length == 0)
        {
            await ReplySuccessAsync(request.Cookie, readReply: true).ConfigureAwait(false);
            return;
        }
        var image = _export!.Image;
        byte[] buffer = ArrayPool<byte>.Shared.Rent(length);
        try
        {
            List<ReadExtent>? extents = null;
            Refusal? failure = null;
            await _export.Gate.EnterAsync(CancellationToken.None).ConfigureAwait(false);
            try
            {
                // Zero ranges become hole chunks (as QEMU's sparse reads), unless the client
                // asked for one unfragmented chunk.
                if (_structuredReplies && (request.Flags & NbdCommandFlags.DontFragment) == 0)
                    extents = await MapReadAsync(image, offset, length).ConfigureAwait(false);
                if (extents is null)
                {
                    await image.ReadAsync(offset, buffer.AsMemory(0, length)).ConfigureAwait(false);
                }
                else
                {
                    foreach (var e in extents)
                        if (!e.IsHole) await image.ReadAsync(e.Offset, buffer.AsMemory((int)(e.Offset - offset), e.Length)).ConfigureAwait(false);
                }
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                failure = Describe(e);
            }
            finally
            {
                _export.Gate.Exit();
            }
            if (failure is { } f)
            {
                await ReplyErrorAsync(request, f.Error, f.Message).ConfigureAwait(false);
                return;
            }

            using var lease = await _replies.AcquireAsync(CancellationToken.None).ConfigureAwait(false);
            var header = lease.Header;
            if (!_structuredReplies)
            {
                NbdSimpleReply.Write(header, NbdError.None, request.Cookie);
                await lease.SendAsync(new ArraySegment<byte>(header, 0, NbdSimpleReply.HeaderLength), new ArraySegment<byte>(buffer, 0, length), CancellationToken.None).ConfigureAwait(false);
            }
            else if (extents is null)
            {
                NbdStructuredReply.WriteDataPrefix(header, true, request.Cookie, request.Offset, length);
                await lease.SendAsync(new ArraySegment<byte>(header, 0, NbdStructuredReply.DataPrefixLength), new ArraySegment<byte>(buffer, 0, length), CancellationToken.None).ConfigureAwait(false);
            }
            else
            {
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
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
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
        long position = offset, end = offset + length;
        while (position < end)
        {
            var status = await BlockChain.StatusAboveAsync(image.Root, position, end - position).ConfigureAwait(false);
            long n = status.Length <= 0 ? end - position : Math.Min(status.Length, end - position);
            bool hole = (status.Flags & BlockStatusFlags.Zero) != 0;
            if (extents is null && !hole && position + n >= end && position == offset) return null;
            extents ??= new List<ReadExtent>();
            if (extents.Count > 0 && extents[^1].IsHole == hole)
            {
                var last = extents[^1];
                extents[^1] = last with { Length = last.Length + (int)n };
            }
            else
            {
                extents.Add(new ReadExtent(position, (int)n, hole));
            }
            position += n;
        }
        return extents;
    }

    private async ValueTask ServeBlockStatusAsync(NbdRequest request)
    {
        var image = _export!.Image;
        bool one = (request.Flags & NbdCommandFlags.RequestOne) != 0;
        var extents = ArrayPool<NbdExtent>.Shared.Rent(one ? 1 : 64);
        int count = 0;
        Refusal? failure = null;
        await _export.Gate.EnterAsync(CancellationToken.None).ConfigureAwait(false);
        try
        {
            long position = (long)request.Offset, end = position + request.Length;
            while (position < end)
            {
                var status = await BlockChain.StatusAboveAsync(image.Root, position, end - position).ConfigureAwait(false);
                long n = status.Length <= 0 ? end - position : Math.Min(status.Length, end - position);
                var flags = ((status.Flags & BlockStatusFlags.Data) == 0 ? NbdAllocationFlags.Hole : NbdAllocationFlags.Data)
                    | ((status.Flags & BlockStatusFlags.Zero) != 0 ? NbdAllocationFlags.Zero : NbdAllocationFlags.Data);
                if (count > 0 && extents[count - 1].Flags == flags)
                {
                    extents[count - 1] = new NbdExtent(extents[count - 1].Length + (uint)n, flags);
                }
                else
                {
                    if (count == NbdLimits.MaxExtents || (one && count == 1)) break;
                    if (count == extents.Length)
                    {
                        var bigger = ArrayPool<NbdExtent>.Shared.Rent(Math.Min(extents.Length * 2, NbdLimits.MaxExtents));
                        extents.AsSpan(0, count).CopyTo(bigger);
                        ArrayPool<NbdExtent>.Shared.Return(extents);
                        extents = bigger;
                    }
                    extents[count++] = new NbdExtent((uint)n, flags);
                }
                position += n;
            }
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            failure = Describe(e);
        }
        finally
        {
            _export.Gate.Exit();
        }
        try
        {
            if (failure is { } f)
            {
                await ReplyErrorAsync(request, f.Error, f.Message).ConfigureAwait(false);
                return;
            }
            var chunk = ArrayPool<byte>.Shared.Rent(NbdStructuredReply.BlockStatusLength(count));
            try
            {
                int chunkLength = NbdStructuredReply.BlockStatusLength(count);
                NbdStructuredReply.WriteBlockStatus(chunk, true, request.Cookie, 0, extents.AsSpan(0, count));
                await _replies.SendAsync(chunk.AsMemory(0, chunkLength), CancellationToken.None).ConfigureAwait(false);
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(chunk);
            }
        }
        finally
        {
            ArrayPool<NbdExtent>.Shared.Return(extents);
        }
    }

    /// <summary>A success without payload: a simple reply (as QEMU sends), or a NONE chunk for a zero-length structured READ.</summary>
    private async ValueTask ReplySuccessAsync(ulong cookie, bool readReply = false)
    {
        using var lease = await _replies.AcquireAsync(CancellationToken.None).ConfigureAwait(false);
        var header = lease.Header;
        if (readReply && _structuredReplies)
        {
            NbdStructuredReply.WriteNone(header, cookie);
            await lease.SendAsync(header.AsMemory(0, NbdStructuredReply.HeaderLength), CancellationToken.None).ConfigureAwait(false);
        }
        else
        {
            NbdSimpleReply.Write(header, NbdError.None, cookie);
            await lease.SendAsync(header.AsMemory(0, NbdSimpleReply.HeaderLength), CancellationToken.None).ConfigureAwait(false);
        }
    }

    /// <summary>An error: a structured ERROR chunk with the message, or a simple reply carrying only the number.</summary>
    private ValueTask ReplyErrorAsync(in NbdRequest request, NbdError error, string message)
    {
        if (_structuredReplies) return _replies.SendAsync(NbdStructuredReply.Error(request.Cookie, error, message), CancellationToken.None);
        var reply = new byte[NbdSimpleReply.HeaderLength];
        NbdSimpleReply.Write(reply, error, request.Cookie);
        return _replies.SendAsync(reply, CancellationToken.None);
    }

    /// <summary>The NBD error for a failed operation (QEMU's system_errno_to_nbd_errno).</summary>
    private static Refusal Describe(Exception e) => e switch
    {
        NativeIOException n => new(ToNbdError(n.Errno), n.Message),
        IOException io => new(NbdError.IO, io.Message),
        OutOfMemoryException => new(NbdError.NoMemory, "Cannot allocate memory"),
        ObjectDisposedException => new(NbdError.Shutdown, "Server shutting down"),
        _ => new(NbdError.IO, e.Message),
    };

    internal static NbdError ToNbdError(int errno) => errno switch
    {
        0 => NbdError.None,
        Errno.EPERM or Errno.EROFS => NbdError.Perm,
        Errno.EIO => NbdError.IO,
        Errno.ENOMEM => NbdError.NoMemory,
        Errno.ENOSPC or Errno.EFBIG => NbdError.NoSpace,
        75 => NbdError.Overflow,
        Errno.ENOTSUP => NbdError.NotSupported,
        108 => NbdError.Shutdown,
        _ => NbdError.Invalid,
    };
}
