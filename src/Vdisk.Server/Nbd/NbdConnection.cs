using System.Net.Sockets;

namespace Vdisk.Server.Nbd;

/// <summary>Where a connection is in its life.</summary>
public enum NbdConnectionState
{
    /// <summary>Greeting sent, waiting for the client's flags.</summary>
    Greeting,
    /// <summary>Option haggling (<see cref="NbdNegotiation"/>).</summary>
    Negotiating,
    /// <summary>Serving requests on one export (<see cref="NbdTransmission"/>).</summary>
    Transmitting,
    /// <summary>No more requests are read; those in flight finish and answer.</summary>
    Closing,
    /// <summary>
    /// Ended by a fault nobody foresaw: what was outstanding got EIO, nothing else is read or
    /// answered.
    /// </summary>
    Broken,
    /// <summary>Done: the socket is closed.</summary>
    Closed,
}

/// <summary>
/// One client of the NBD server: the socket, the life cycle as an explicit state machine whose
/// transitions are checked, and the requests outstanding. The phases do the protocol work:
/// <see cref="NbdNegotiation"/> (greeting and options), <see cref="NbdTransmission"/> (reading
/// requests, flow control, validation) and <see cref="NbdRequestHandler"/> (serving them).
/// A client leaving or the server stopping ends a connection quietly; any other fault ends it
/// deliberately through <see cref="Break"/>, which logs it and answers what is outstanding.
/// </summary>
public sealed class NbdConnection
{
    private static readonly TimeSpan s_shutdownGrace = TimeSpan.FromSeconds(30);

    private readonly NbdServer _server;
    private readonly Socket _socket;
    private readonly NbdSocketReader _reader;
    private readonly NbdReplyChannel _replies;
    private readonly CancellationTokenSource _abort;
    private readonly Lock _lock = new();
    private readonly HashSet<NbdPendingRequest> _outstanding = new();
    private readonly TaskCompletionSource _idle = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _running = 1; // the connection's own run, so that idle means "run ended and nothing pending"
    private NbdConnectionState _state = NbdConnectionState.Greeting;
    private NbdSession? _session;

    internal NbdConnection(NbdServer server, Socket socket, CancellationToken serverStopping)
    {
        _server = server;
        _socket = socket;
        _reader = new NbdSocketReader(socket);
        _replies = new NbdReplyChannel(socket);
        _abort = CancellationTokenSource.CreateLinkedTokenSource(serverStopping);
    }

    /// <summary>The state.</summary>
    public NbdConnectionState State
    {
        get
        {
            lock (_lock) return _state;
        }
    }

    /// <summary>The export in use once option haggling chose one.</summary>
    public NbdExport? Export { get; private set; }

    /// <summary>Whether negotiation succeeded (the connection reached transmission), as QEMU's <c>negotiated</c>.</summary>
    public bool Negotiated { get; private set; }

    // ---------------------------------------------------------------- the state machine

    private static bool IsAllowed(NbdConnectionState from, NbdConnectionState to) => (from, to) switch
    {
        (NbdConnectionState.Greeting, NbdConnectionState.Negotiating) => true,
        (NbdConnectionState.Negotiating, NbdConnectionState.Transmitting) => true,
        (NbdConnectionState.Greeting or NbdConnectionState.Negotiating or NbdConnectionState.Transmitting, NbdConnectionState.Closing) => true,
        (not (NbdConnectionState.Broken or NbdConnectionState.Closed), NbdConnectionState.Broken) => true,
        (NbdConnectionState.Closing or NbdConnectionState.Broken, NbdConnectionState.Closed) => true,
        _ => false,
    };

    /// <summary>Moves to <paramref name="next"/>; a transition the machine does not have is a bug.</summary>
    private void MoveTo(NbdConnectionState next)
    {
        lock (_lock)
        {
            if (!IsAllowed(_state, next)) throw new InvalidOperationException($"NBD connection: no transition from {_state} to {next}");
            _state = next;
        }
    }

    /// <summary>Moves to <paramref name="next"/> unless the connection is already past it (broken, say).</summary>
    private bool TryMoveTo(NbdConnectionState next)
    {
        lock (_lock)
        {
            if (!IsAllowed(_state, next)) return false;
            _state = next;
            return true;
        }
    }

    // ---------------------------------------------------------------- life cycle

    /// <summary>Stops reading requests; requests in flight still complete and reply.</summary>
    public void Abort()
    {
        try
        {
            _abort.Cancel();
        }
        catch (ObjectDisposedException) { }
    }

    /// <summary>Runs the connection to its end. Never throws: every fault ends in <see cref="Break"/>.</summary>
    internal async Task RunAsync()
    {
        var token = _abort.Token;
        try
        {
            var negotiation = new NbdNegotiation(this, _server, _reader, _replies);
            await negotiation.GreetAsync(token).ConfigureAwait(false);
            MoveTo(NbdConnectionState.Negotiating);
            var session = await negotiation.NegotiateAsync(token).ConfigureAwait(false);
            if (session is null) return;
            lock (_lock) _session = session;
            MoveTo(NbdConnectionState.Transmitting);
            Negotiated = true;
            await new NbdTransmission(this, session, _reader, _replies, _server.PayloadBuffers).RunAsync(token).ConfigureAwait(false);
        }
        catch (NbdNegotiationException e) when (!token.IsCancellationRequested)
        {
            // QEMU reports a client that fails the handshake (error_report in nbd_co_client_start).
            Diagnostics.ErrorSink?.Invoke(e.Message);
        }
        catch (Exception e) when (NbdErrors.IsDisconnect(e, token))
        {
            // The client went away or the connection was told to stop: nothing to answer.
        }
        catch (Exception e)
        {
            Break(e);
        }
        finally
        {
            TryMoveTo(NbdConnectionState.Closing);
            EndWork();
            // Requests already read still finish and answer; a client that stops reading its
            // replies cannot hold the shutdown up for ever.
            await _idle.Task.WaitAsync(s_shutdownGrace).ContinueWith(static _ => { }, TaskScheduler.Default).ConfigureAwait(false);
            Export?.RemoveClient(this);
            try
            {
                _socket.Shutdown(SocketShutdown.Both);
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException) { }
            _socket.Dispose();
            _abort.Dispose();
            MoveTo(NbdConnectionState.Closed);
        }
    }

    /// <summary>Joins <paramref name="export"/>'s clients; false when it is going away.</summary>
    internal bool Attach(NbdExport export)
    {
        if (!export.TryAddClient(this)) return false;
        Export = export;
        return true;
    }

    // ---------------------------------------------------------------- requests and faults

    /// <summary>Registers a request about to be served: until it is answered, a break answers it.</summary>
    internal void BeginRequest(NbdPendingRequest pending)
    {
        lock (_lock) _outstanding.Add(pending);
        Interlocked.Increment(ref _running);
    }

    /// <summary>The request is done (answered, or its client gone).</summary>
    internal void EndRequest(NbdPendingRequest pending)
    {
        lock (_lock) _outstanding.Remove(pending);
        EndWork();
    }

    /// <summary>Keeps a task the connection started; it must not fault (see <see cref="Break"/>).</summary>
    internal void Track(Task work)
    {
        if (work.IsCompleted) return;
        // Everything that runs for the connection catches its own faults; a fault here is a
        // bug in that promise, and still breaks the connection rather than vanish.
        _ = work.ContinueWith(static (t, state) => ((NbdConnection)state!).Break(t.Exception!.GetBaseException()), this,
            CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted | TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
    }

    private void EndWork()
    {
        if (Interlocked.Decrement(ref _running) == 0) _idle.TrySetResult();
    }

    /// <summary>
    /// Ends the connection because of a fault nobody foresaw (a bug in a driver or here): logs
    /// one line naming the export and the error, stops reading, and answers every request still
    /// outstanding with EIO. The first fault wins; later ones are part of the same break.
    /// </summary>
    internal void Break(Exception fault)
    {
        NbdPendingRequest[] unanswered;
        NbdSession? session;
        lock (_lock)
        {
            if (!IsAllowed(_state, NbdConnectionState.Broken)) return;
            _state = NbdConnectionState.Broken;
            unanswered = _outstanding.ToArray();
            session = _session;
        }
        string where = Export is { } export ? $"NBD export '{export.Name}'" : "NBD server";
        Diagnostics.WarningSink?.Invoke($"{where}: connection closed after an unexpected error: {NbdErrors.OneLine(fault)}");
        Abort();
        if (session is null) return;
        foreach (var pending in unanswered)
        {
            if (!pending.TryClaimReply()) continue;
            Interlocked.Increment(ref _running);
            _ = AnswerBrokenAsync(pending, session, fault);
        }
    }

    private async Task AnswerBrokenAsync(NbdPendingRequest pending, NbdSession session, Exception fault)
    {
        try
        {
            var reply = NbdRequestHandler.ErrorReply(session.StructuredReplies, pending.Request.Cookie, new NbdRefusal(NbdError.IO, fault.Message));
            await _replies.SendAsync(reply, CancellationToken.None).ConfigureAwait(false);
        }
        catch (Exception e) when (NbdErrors.IsDisconnect(e, CancellationToken.None))
        {
            // The client is gone: nobody is waiting for the answer.
        }
        finally
        {
            EndWork();
        }
    }
}
