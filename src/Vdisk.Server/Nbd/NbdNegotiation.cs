using System.Buffers.Binary;
using System.Net.Sockets;
using Vdisk.Native;
namespace Vdisk.Server.Nbd;

/// <summary>What option haggling settled for the transmission phase.</summary>
/// <param name="Export">The export the client chose (the connection is one of its clients).</param>
/// <param name="Size">The export's size as announced.</param>
/// <param name="StructuredReplies">NBD_OPT_STRUCTURED_REPLY was negotiated.</param>
/// <param name="MetaContexts">The ids of the metadata contexts selected for this export, in reply order.</param>
internal sealed record NbdSession(NbdExport Export, long Size, bool StructuredReplies, IReadOnlyList<uint> MetaContexts);

/// <summary>
/// The handshake of one connection: greeting, client flags, then options until one starts
/// transmission (EXPORT_NAME or GO) or the client leaves. Only this phase reads options.
/// </summary>
internal sealed class NbdNegotiation
{
    private readonly NbdConnection _connection;
    private readonly NbdServer _server;
    private readonly NbdSocketReader _reader;
    private readonly NbdReplyChannel _replies;
    private bool _noZeroes;
    private bool _structuredReplies;
    private string? _metaContextExport;
    private IReadOnlyList<uint> _selectedContexts = [];
    private NbdSession? _session;

    public NbdNegotiation(NbdConnection connection, NbdServer server, NbdSocketReader reader, NbdReplyChannel replies)
    {
        _connection = connection;
        _server = server;
        _reader = reader;
        _replies = replies;
    }

    /// <summary>
    /// Sends the greeting and reads the client's flags.
    /// </summary>
    /// <exception cref="NbdNegotiationException">The greeting could not be sent, or the flags are missing or unknown.</exception>
    public async Task GreetAsync(CancellationToken token)
    {
        var greeting = new byte[NbdGreeting.Length];
        NbdGreeting.Write(greeting);
        try
        {
            await _replies.SendAsync(greeting, token).ConfigureAwait(false);
        }
        catch (SocketException e)
        {
            throw new NbdNegotiationException($"write failed: Unable to write to socket: {NativeIOException.Describe(e.NativeErrorCode)}");
        }
        var flags = new byte[NbdGreeting.ClientFlagsLength];
        await ReadAsync(flags, "flags", token).ConfigureAwait(false);
        if (!NbdGreeting.TryReadClientFlags(flags, out var clientFlags))
            throw Failed($"Unknown client flags 0x{BinaryPrimitives.ReadUInt32BigEndian(flags) & ~(uint)NbdGreeting.ServerFlags:x} received");
        _noZeroes = (clientFlags & NbdHandshakeFlags.NoZeroes) != 0;
    }

    /// <summary>Answers options until one starts transmission (its session) or the session ends (null).</summary>
    /// <exception cref="NbdNegotiationException">The client broke the protocol or left mid-option.</exception>
    public async Task<NbdSession?> NegotiateAsync(CancellationToken token)
    {
        // Field by field, as nbd_negotiate_options reads them: a client that leaves is reported
        // by the field it left in ("Failed to read option length: ...").
        var magic = new byte[8];
        var word = new byte[4];
        while (true)
        {
            await ReadAsync(magic, "opts magic", token).ConfigureAwait(false);
            if (BinaryPrimitives.ReadUInt64BigEndian(magic) != NbdMagic.Option) throw Failed("Bad magic received");
            await ReadAsync(word, "option", token).ConfigureAwait(false);
            var code = (NbdOption)BinaryPrimitives.ReadUInt32BigEndian(word);
            await ReadAsync(word, "option length", token).ConfigureAwait(false);
            var option = new NbdOptionRequest(code, BinaryPrimitives.ReadUInt32BigEndian(word));
            if (option.Length > NbdLimits.MaxOptionLength)
            {
                // QEMU's own wording, space included.
                if (option.Length > NbdLimits.MaxDiscardedOptionLength)
                    throw Failed($"len ({option.Length} ) is larger than max len ({NbdLimits.MaxDiscardedOptionLength})");
                await ReadAsync(() => _reader.SkipAsync(option.Length, token), null).ConfigureAwait(false);
                await ReplyAsync(NbdOptionReply.Error(option.Option, NbdOptionReplyType.ErrTooBig,
                    $"option '{NbdOptionRequest.Name(option.Option)}' length {option.Length} exceeds {NbdLimits.MaxOptionLength}"), token).ConfigureAwait(false);
                continue;
            }
            var data = new byte[option.Length];
            await ReadAsync(data, null, token).ConfigureAwait(false);
            var outcome = await HandleOptionAsync(option.Option, data, token).ConfigureAwait(false);
            if (outcome == OptionOutcome.Transmit) return _session;
            if (outcome == OptionOutcome.Close) return null;
        }
    }

    /// <summary>QEMU's report of a failed negotiation (nbd_negotiate_options' error, prefixed by nbd_negotiate).</summary>
    private static NbdNegotiationException Failed(string reason) => new("option negotiation failed: " + reason);

    private ValueTask ReadAsync(Memory<byte> destination, string? what, CancellationToken token) =>
        ReadAsync(() => _reader.ReadExactlyAsync(destination, token), what);

    /// <summary>
    /// A read of client data with QEMU's failure text (nbd_read: "Failed to read WHAT: " and
    /// qio_channel_read_all's reason; option data is read without a WHAT).
    /// </summary>
    private static async ValueTask ReadAsync(Func<ValueTask> read, string? what)
    {
        string reason;
        try
        {
            await read().ConfigureAwait(false);
            return;
        }
        catch (EndOfStreamException)
        {
            reason = "Unexpected end-of-file before all data were read";
        }
        catch (SocketException e)
        {
            reason = "Unable to read from socket: " + NativeIOException.Describe(e.NativeErrorCode);
        }
        throw Failed(what is null ? reason : $"Failed to read {what}: {reason}");
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
                if (data.Length > NbdLimits.MaxString) throw Failed("Bad length received");
                if (!NbdInfoRequest.TryDecodeName(data, out string name, out _)) return OptionOutcome.Close;
                // This option cannot fail politely: the protocol says to hang up.
                var export = _server.FindExport(name) ?? throw Failed("export not found");
                if (!StartTransmission(export)) return OptionOutcome.Close;
                var reply = NbdExportNameReply.Create((ulong)_session!.Size, export.TransmissionFlags(_structuredReplies, _server.MultiConn), _noZeroes);
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
        if (_server.FindExport(request!.ExportName) is not { } export)
        {
            await ReplyAsync(NbdOptionReply.Error(option, NbdOptionReplyType.ErrUnknown, $"export '{request.ExportName}' not present"), token).ConfigureAwait(false);
            return OptionOutcome.Continue;
        }
        bool listing = option == NbdOption.ListMetaContext;
        var selected = request.Select(listing, export.AllocationDepth, export.Bitmaps.Select(b => b.Name).ToList());
        if (!listing)
        {
            _metaContextExport = request.ExportName;
            _selectedContexts = selected.Select(c => c.Id).ToArray();
        }
        // LIST replies carry id 0 by rule (nbd_negotiate_send_meta_context).
        foreach (var (id, name) in selected)
            await ReplyAsync(NbdOptionReply.MetaContext(option, listing ? 0 : id, name), token).ConfigureAwait(false);
        await ReplyAsync(NbdOptionReply.Ack(option), token).ConfigureAwait(false);
        return OptionOutcome.Continue;
    }

    /// <summary>Joins the export's clients and settles the session; false when the export is going away.</summary>
    private bool StartTransmission(NbdExport export)
    {
        if (!_connection.Attach(export)) return false;
        // Contexts were selected for one export; going to another drops them.
        var contexts = _metaContextExport == export.Name ? _selectedContexts : [];
        _session = new NbdSession(export, export.Image.Length, _structuredReplies, contexts);
        return true;
    }

    private async ValueTask<OptionOutcome> InvalidAsync(NbdOption option, string message, CancellationToken token)
    {
        await ReplyAsync(NbdOptionReply.Error(option, NbdOptionReplyType.ErrInvalid, message), token).ConfigureAwait(false);
        return OptionOutcome.Continue;
    }

    private ValueTask ReplyAsync(byte[] reply, CancellationToken token) => _replies.SendAsync(reply, token);
}

/// <summary>
/// The handshake failed on the client's side (it left, or broke the protocol). The message is
/// what QEMU's NBD server reports with error_report ("option negotiation failed: ...").
/// </summary>
internal sealed class NbdNegotiationException(string message) : IOException(message);
