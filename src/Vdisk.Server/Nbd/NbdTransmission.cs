namespace Vdisk.Server.Nbd;

/// <summary>
/// The transmission phase of one connection: reads requests one after another, refuses the
/// invalid ones at once, and starts the valid ones concurrently under two limits (flow
/// control): <see cref="MaxInFlight"/> requests and <see cref="MaxInFlightBytes"/> payload
/// bytes. A client that breaks the framing (bad magic, a write too large to skip) is hung up on.
/// </summary>
internal sealed class NbdTransmission
{
    /// <summary>Requests a connection serves at once; more wait in the socket.</summary>
    public const int MaxInFlight = 64;

    /// <summary>
    /// Payload bytes (write data read, read data to send) a connection may have in flight: a
    /// client cannot make the daemon hold 64 × 32 MiB. A request larger than what is free waits
    /// in the socket until earlier ones finish (one always fits when nothing else is in flight).
    /// </summary>
    public const long MaxInFlightBytes = 64L * 1024 * 1024;

    private readonly NbdConnection _connection;
    private readonly NbdSession _session;
    private readonly NbdSocketReader _reader;
    private readonly NbdReplyChannel _replies;
    private readonly NbdRequestHandler _handler;
    private readonly NbdPayloadBuffers _buffers;
    private readonly SemaphoreSlim _slots = new(MaxInFlight, MaxInFlight);
    private readonly Lock _budgetLock = new();
    private long _budgetUsed;
    private TaskCompletionSource? _budgetWaiter;

    public NbdTransmission(NbdConnection connection, NbdSession session, NbdSocketReader reader, NbdReplyChannel replies, NbdPayloadBuffers buffers)
    {
        _buffers = buffers;
        _connection = connection;
        _session = session;
        _reader = reader;
        _replies = replies;
        _handler = new NbdRequestHandler(session, replies, _buffers);
    }

    /// <summary>Reads requests until the client disconnects, breaks the framing, or the connection stops.</summary>
    public async Task RunAsync(CancellationToken token)
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
                    await RefuseAsync(request, new(NbdError.Invalid, TooLarge(request.Length))).ConfigureAwait(false);
                    return;
                }
                charge = request.Length;
                await AcquireBudgetAsync(charge, token).ConfigureAwait(false);
                payload = _buffers.Rent((int)request.Length);
                try
                {
                    await _reader.ReadExactlyAsync(payload.AsMemory(0, (int)request.Length), token).ConfigureAwait(false);
                }
                catch
                {
                    _buffers.Return(payload);
                    ReleaseBudget(charge);
                    throw;
                }
            }

            if (Validate(request) is { } invalid)
            {
                if (payload is not null) _buffers.Return(payload);
                ReleaseBudget(charge);
                await RefuseAsync(request, invalid).ConfigureAwait(false);
                continue;
            }

            if (request.Command == NbdCommand.Read)
            {
                charge = request.Length;
                await AcquireBudgetAsync(charge, token).ConfigureAwait(false);
            }
            await _slots.WaitAsync(token).ConfigureAwait(false);
            var pending = new NbdPendingRequest(request);
            _connection.BeginRequest(pending);
            _connection.Track(ServeAsync(pending, payload, charge));
        }
    }

    /// <summary>
    /// Serves one request to its end. Every outcome is handled here: a reply that cannot be
    /// sent means the client is gone; any other fault breaks the connection, which answers
    /// what is outstanding.
    /// </summary>
    private async Task ServeAsync(NbdPendingRequest pending, byte[]? payload, long charge)
    {
        try
        {
            await _handler.HandleAsync(pending, payload).ConfigureAwait(false);
        }
        catch (Exception e) when (NbdErrors.IsDisconnect(e, CancellationToken.None))
        {
            // The reply could not be sent: the client is gone.
        }
        catch (Exception e)
        {
            _connection.Break(e);
        }
        finally
        {
            if (payload is not null) _buffers.Return(payload);
            ReleaseBudget(charge);
            _slots.Release();
            _connection.EndRequest(pending);
        }
    }

    private ValueTask RefuseAsync(in NbdRequest request, NbdRefusal refusal) =>
        _replies.SendAsync(NbdRequestHandler.ErrorReply(_session.StructuredReplies, request.Cookie, refusal), CancellationToken.None);

    // QEMU 7.2's wording, stray space before ")" included, reproduced on purpose: clients see the
    // same text from vdisk serve as from qemu-storage-daemon (pinned by ServeRobustnessTests).
    private static string TooLarge(uint length) => $"len ({length} ) is larger than max len ({NbdLimits.MaxPayload})";

    /// <summary>QEMU's nbd_co_receive_request checks, with the errors the protocol asks for.</summary>
    private NbdRefusal? Validate(in NbdRequest request)
    {
        var valid = NbdCommandFlags.Fua;
        switch (request.Command)
        {
            case NbdCommand.Read:
                if (_session.StructuredReplies) valid |= NbdCommandFlags.DontFragment;
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
        if (writes && !_session.Export.Writable) return new(NbdError.Perm, "Export is read-only");
        long size = _session.Size;
        if (request.Command != NbdCommand.Flush &&
            (request.Offset > (ulong)size || request.Length > (ulong)size - request.Offset))
        {
            var error = request.Command is NbdCommand.Write or NbdCommand.WriteZeroes ? NbdError.NoSpace : NbdError.Invalid;
            return new(error, $"operation past EOF; From: {request.Offset}, Len: {request.Length}, Size: {size}");
        }
        if (request.Command == NbdCommand.BlockStatus)
        {
            if (_session.MetaContexts.Count == 0) return new(NbdError.Invalid, "No meta contexts negotiated");
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
}
