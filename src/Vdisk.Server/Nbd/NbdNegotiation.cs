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

    /// <summary>Sends the greeting and reads the client's flags; false when they are unacceptable.</summary>
    public async Task<bool> GreetAsync(CancellationToken token)
    {
        var greeting = new byte[NbdGreeting.Length];
        NbdGreeting.Write(greeting);
        await _replies.SendAsync(greeting, token).ConfigureAwait(false);
        var flags = new byte[NbdGreeting.ClientFlagsLength];
        await _reader.ReadExactlyAsync(flags, token).ConfigureAwait(false);
        if (!NbdGreeting.TryReadClientFlags(flags, out var clientFlags)) return false;
        _noZeroes = (clientFlags & NbdHandshakeFlags.NoZeroes) != 0;
        return true;
    }

    /// <summary>Answers options until one starts transmission (its session) or the session ends (null).</summary>
    public async Task<NbdSession?> NegotiateAsync(CancellationToken token)
    {
        var header = new byte[NbdOptionRequest.HeaderLength];
        while (true)
        {
            await _reader.ReadExactlyAsync(header, token).ConfigureAwait(false);
            if (!NbdOptionRequest.TryRead(header, out var option)) return null;
            if (option.Length > NbdLimits.MaxOptionLength)
            {
                if (option.Length > NbdLimits.MaxDiscardedOptionLength) return null;
                await _reader.SkipAsync(option.Length, token).ConfigureAwait(false);
                await ReplyAsync(NbdOptionReply.Error(option.Option, NbdOptionReplyType.ErrTooBig,
                    $"option '{NbdOptionRequest.Name(option.Option)}' length {option.Length} exceeds {NbdLimits.MaxOptionLength}"), token).ConfigureAwait(false);
                continue;
            }
            var data = new byte[option.Length];
            await _reader.ReadExactlyAsync(data, token).ConfigureAwait(false);
            var outcome = await HandleOptionAsync(option.Option, data, token).ConfigureAwait(false);
            if (outcome == OptionOutcome.Transmit) return _session;
            if (outcome == OptionOutcome.Close) return null;
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
