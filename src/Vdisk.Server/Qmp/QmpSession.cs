using System.Net.Sockets;
using System.Text;
using Vdisk.Options;
using Vdisk.Server.Daemon;
using static Vdisk.Server.Qmp.QmpJson;

namespace Vdisk.Server.Qmp;

/// <summary>Where a QMP client is in the protocol.</summary>
public enum QmpSessionState
{
    /// <summary>Greeting sent; only qmp_capabilities is accepted.</summary>
    Negotiating,
    /// <summary>Commands are accepted and events delivered.</summary>
    Commands,
    /// <summary>The client is gone.</summary>
    Closed,
}

/// <summary>
/// One QMP client: greeting, capabilities negotiation, then commands. Input is cut into JSON
/// values as it arrives (no newline needed); each value is checked the way QEMU's
/// qmp_dispatch checks it and answered in order. Replies and events share one writer, so a
/// line is never interleaved with another.
/// </summary>
public sealed class QmpSession
{
    private readonly Socket _socket;
    private readonly StorageDaemon _daemon;
    private static readonly TimeSpan s_drainTimeout = TimeSpan.FromSeconds(5);
    private readonly SemaphoreSlim _output = new(1, 1);
    private bool _oob;

    internal QmpSession(Socket socket, StorageDaemon daemon)
    {
        _socket = socket;
        _daemon = daemon;
    }

    /// <summary>The protocol state.</summary>
    public QmpSessionState State { get; private set; } = QmpSessionState.Negotiating;

    /// <summary>The greeting (QMP 7.2 dialect; the package names vdisk).</summary>
    public static OptionDict Greeting() => Dict(("QMP", Dict(
        ("version", QmpCommands.Version()),
        ("capabilities", List([Str("oob")])))));

    internal async Task RunAsync(CancellationToken token)
    {
        try
        {
            await WriteAsync(Greeting()).ConfigureAwait(false);
            var splitter = new QmpInputSplitter();
            var buffer = new byte[8192];
            while (true)
            {
                int n = await _socket.ReceiveAsync(buffer, SocketFlags.None, token).ConfigureAwait(false);
                if (n == 0) return;
                foreach (var input in splitter.Feed(buffer.AsSpan(0, n)))
                {
                    if (input.Error is { } error)
                    {
                        await WriteAsync(ErrorReply(error, null)).ConfigureAwait(false);
                        if (input.Fatal)
                        {
                            await HangUpGracefullyAsync(buffer).ConfigureAwait(false);
                            return;
                        }
                        continue;
                    }
                    var (reply, after) = await HandleAsync(input.Json!).ConfigureAwait(false);
                    await WriteAsync(reply).ConfigureAwait(false);
                    if (after is not null) await after().ConfigureAwait(false);
                }
            }
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException or OperationCanceledException or IOException)
        {
            // Client gone, or the daemon is stopping.
        }
        finally
        {
            State = QmpSessionState.Closed;
            // Events queued before the session ended (those of a shutdown) still go out: the
            // output lock is granted in order, so once we hold it they have been written.
            if (await _output.WaitAsync(s_drainTimeout).ConfigureAwait(false)) _output.Release();
            _socket.Dispose();
        }
    }

    /// <summary>
    /// Ends a session whose input can no longer be trusted, so that the client still reads the
    /// error: stop sending, then swallow what it is still sending (closing a unix socket with
    /// unread input would reset the connection and lose the reply), within bounds.
    /// </summary>
    private async Task HangUpGracefullyAsync(byte[] buffer)
    {
        _socket.Shutdown(SocketShutdown.Send);
        using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        long swallowed = 0;
        while (swallowed < 64L * 1024 * 1024)
        {
            int n = await _socket.ReceiveAsync(buffer, SocketFlags.None, limit.Token).ConfigureAwait(false);
            if (n == 0) return;
            swallowed += n;
        }
    }

    /// <summary>Answers one JSON value: the reply, and work to do once the reply is out.</summary>
    internal async Task<(OptionDict Reply, Func<Task>? After)> HandleAsync(byte[] json)
    {
        OptionValue? id = null;
        try
        {
            var input = QmpJson.Parse(json);
            if (input is not OptionDict request) throw QmpException.Generic("QMP input must be a JSON object");
            id = request["id"];
            string name = CheckRequest(request, out bool outOfBand);
            var command = QmpCommands.Find(name);
            if (State == QmpSessionState.Negotiating && name != "qmp_capabilities")
                throw QmpException.CommandNotFound("Expecting capabilities negotiation with 'qmp_capabilities'");
            if (command is null) throw QmpException.CommandNotFound($"The command {name} has not been found");
            if (outOfBand) throw QmpException.Generic($"The command {name} does not support OOB");
            var arguments = QapiVisitor.Json.VisitArguments(command.Arguments, request["arguments"] as OptionDict);
            if (name == "qmp_capabilities") return (Success(NegotiateCapabilities(arguments), id), null);
            var result = await _daemon.RunExclusiveAsync(() => command.Handler(_daemon, arguments)).ConfigureAwait(false);
            return (Success(result.Return, id), result.After);
        }
        catch (QmpException e)
        {
            return (ErrorReply(e, id), null);
        }
        catch (DaemonException e)
        {
            return (ErrorReply(QmpException.Generic(e.Message), id), null);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            // A failure nobody foresaw still gets an answer; the daemon and the session go on.
            Diagnostics.WarningSink?.Invoke($"QMP command failed unexpectedly: {e}");
            return (ErrorReply(QmpException.Generic(e.Message), id), null);
        }
    }

    /// <summary>qmp_dispatch_check_obj: the request's keys, in QDict order.</summary>
    private string CheckRequest(OptionDict request, out bool outOfBand)
    {
        string? name = null;
        outOfBand = false;
        foreach (var (key, value) in QDictOrder.Entries(request))
        {
            if (key == "execute" || (key == "exec-oob" && _oob))
            {
                if (value is not OptionScalar { Kind: ScalarKind.String } s) throw QmpException.Generic($"QMP input member '{key}' must be a string");
                if (name is not null) throw QmpException.Generic("QMP input must not contain both 'execute' and 'exec-oob'");
                name = s.Text;
                outOfBand = key == "exec-oob";
            }
            else if (key == "arguments")
            {
                if (value is not OptionDict) throw QmpException.Generic("QMP input member 'arguments' must be an object");
            }
            else if (key != "id")
            {
                throw QmpException.Generic($"QMP input member '{key}' is unexpected");
            }
        }
        return name ?? throw QmpException.Generic("QMP input lacks member 'execute'");
    }

    private OptionDict NegotiateCapabilities(OptionDict arguments)
    {
        if (State != QmpSessionState.Negotiating)
            throw QmpException.CommandNotFound("Capabilities negotiation is already complete, command ignored");
        _oob = arguments["enable"] is OptionList { Items.Count: > 0 };
        State = QmpSessionState.Commands;
        return new OptionDict();
    }

    private static OptionDict Success(OptionValue result, OptionValue? id)
    {
        var reply = Dict(("return", result));
        if (id is not null) reply.Set("id", id);
        return reply;
    }

    private static OptionDict ErrorReply(QmpException e, OptionValue? id)
    {
        var reply = Dict(("error", Dict(("class", Str(e.ErrorClass.ToString())), ("desc", Str(e.Message)))));
        if (id is not null) reply.Set("id", id);
        return reply;
    }

    /// <summary>Queues an event if the client finished negotiation (QEMU sends none before).</summary>
    internal void SendEvent(string name, OptionDict data)
    {
        if (State != QmpSessionState.Commands) return;
        var now = DateTimeOffset.UtcNow;
        long micros = now.ToUnixTimeMilliseconds() * 1000 + now.Ticks % TimeSpan.TicksPerMillisecond / 10;
        var message = Dict(("event", Str(name)), ("data", data),
            ("timestamp", Dict(("seconds", Int(micros / 1_000_000)), ("microseconds", Int(micros % 1_000_000)))));
        _ = WriteQuietlyAsync(message);
    }

    private async Task WriteQuietlyAsync(OptionDict message)
    {
        try
        {
            await WriteAsync(message).ConfigureAwait(false);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException or IOException) { }
    }

    private async Task WriteAsync(OptionDict message)
    {
        var bytes = Encoding.UTF8.GetBytes(QmpJson.Serialize(message) + "\r\n");
        await _output.WaitAsync().ConfigureAwait(false);
        try
        {
            int sent = 0;
            while (sent < bytes.Length) sent += await _socket.SendAsync(bytes.AsMemory(sent), SocketFlags.None).ConfigureAwait(false);
        }
        finally
        {
            _output.Release();
        }
    }
}
