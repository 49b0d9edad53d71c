using System.Buffers.Binary;
using System.Numerics;
using System.Text;

namespace Vdisk.Drivers.Nbd;

/// <summary>What the handshake learned about the export (QEMU's NBDExportInfo).</summary>
internal sealed record NbdExportInfo
{
    public required ulong Size { get; init; }
    public required ushort Flags { get; init; }
    public uint MinBlock { get; init; }
    public uint OptBlock { get; init; }
    public uint MaxBlock { get; init; }
    public bool StructuredReplies { get; init; }

    /// <summary>The server's id for base:allocation, or null when block status is not available.</summary>
    public uint? BaseAllocationId { get; init; }

    public bool Has(ushort flag) => (Flags & flag) != 0;
}

/// <summary>
/// The client side of the handshake as QEMU 7.2's nbd_receive_negotiate does it: fixed newstyle,
/// NBD_OPT_STRUCTURED_REPLY (a refusal only means simple replies), NBD_OPT_SET_META_CONTEXT for
/// base:allocation, then NBD_OPT_GO asking for block sizes; servers without GO get
/// NBD_OPT_LIST (for a good error) and NBD_OPT_EXPORT_NAME. Errors are QEMU's messages, with the
/// server's own text on a second line ("server reported: ...").
/// </summary>
internal static class NbdHandshake
{
    public static async Task<NbdExportInfo> NegotiateAsync(NbdChannel channel, string export, string? metaContext, CancellationToken ct)
    {
        var (style, zeroes) = await StartAsync(channel, structuredReply: true, ct).ConfigureAwait(false);
        if (style == NbdServerStyle.Oldstyle)
        {
            if (export.Length > 0) throw Fail("Server does not support non-empty export names");
            var old = await FinishOldstyleAsync(channel, ct).ConfigureAwait(false);
            await channel.SkipAsync(124, "reserved block", ct).ConfigureAwait(false);
            return old;
        }

        if (style >= NbdServerStyle.Newstyle)
        {
            bool structured = style == NbdServerStyle.NewstyleStructured;
            uint? baseAllocation = null;
            if (structured && metaContext is not null) baseAllocation = await SetMetaContextAsync(channel, export, metaContext, ct).ConfigureAwait(false);
            var go = await InfoOrGoAsync(channel, NbdWire.OptGo, export, ct).ConfigureAwait(false);
            if (go is not null) return Validate(go with { StructuredReplies = structured, BaseAllocationId = baseAllocation });
            await QueryExportsAsync(channel, export, ct).ConfigureAwait(false);
        }

        await SendOptionAsync(channel, NbdWire.OptExportName, Encoding.UTF8.GetBytes(export), ct).ConfigureAwait(false);
        ulong size = await channel.ReadUInt64Async("export length", ct).ConfigureAwait(false);
        ushort flags = await channel.ReadUInt16Async("export flags", ct).ConfigureAwait(false);
        if (zeroes) await channel.SkipAsync(124, "reserved block", ct).ConfigureAwait(false);
        return new NbdExportInfo { Size = size, Flags = flags };
    }

    /// <summary>
    /// nbd_receive_export_list, as <c>qemu-nbd --list</c> uses it: NBD_OPT_LIST for the names, then
    /// NBD_OPT_INFO (asking for block sizes) and, with structured replies, NBD_OPT_LIST_META_CONTEXT
    /// for each; an oldstyle server describes its one export by itself.
    /// </summary>
    public static async Task<IReadOnlyList<NbdListedExport>> ListExportsAsync(NbdChannel channel, CancellationToken ct)
    {
        var (style, _) = await StartAsync(channel, structuredReply: true, ct).ConfigureAwait(false);
        switch (style)
        {
            case NbdServerStyle.Oldstyle:
            {
                var old = await FinishOldstyleAsync(channel, ct).ConfigureAwait(false);
                // NBD_CMD_DISC as a courtesy; the information is in hand, so failures do not matter.
                try
                {
                    await channel.SkipAsync(124, "reserved block", ct).ConfigureAwait(false);
                    var disconnect = new byte[NbdWire.RequestSize];
                    BinaryPrimitives.WriteUInt32BigEndian(disconnect, NbdWire.RequestMagic);
                    BinaryPrimitives.WriteUInt16BigEndian(disconnect.AsSpan(6), NbdWire.CmdDisconnect);
                    await channel.WriteAsync(disconnect, ct).ConfigureAwait(false);
                }
                catch (IOException)
                {
                }
                return [new NbdListedExport("", null, old.Size, old.Flags, 0, 0, 0, [])];
            }
            case NbdServerStyle.ExportNameOnly:
                throw Fail("Server does not support export lists");
        }

        await SendOptionAsync(channel, NbdWire.OptList, ReadOnlyMemory<byte>.Empty, ct).ConfigureAwait(false);
        var names = new List<(string Name, string? Description)>();
        while (await ReceiveListEntryAsync(channel, ct).ConfigureAwait(false) is { } entry) names.Add(entry);

        var exports = new List<NbdListedExport>(names.Count);
        bool described = true;
        foreach (var (name, description) in names)
        {
            var listed = new NbdListedExport(name, description, 0, 0, 0, 0, 0, []);
            if (described)
            {
                // When NBD_OPT_INFO is not understood, the rest is pointless to ask (QEMU stops there too).
                var info = await InfoOrGoAsync(channel, NbdWire.OptInfo, name, ct).ConfigureAwait(false);
                if (info is null)
                {
                    described = false;
                }
                else
                {
                    var contexts = style == NbdServerStyle.NewstyleStructured
                        ? await ListMetaContextsAsync(channel, name, ct).ConfigureAwait(false)
                        : [];
                    listed = listed with
                    {
                        Size = info.Size, Flags = info.Flags, MinBlock = info.MinBlock, OptBlock = info.OptBlock,
                        MaxBlock = info.MaxBlock, MetaContexts = contexts,
                    };
                }
            }
            exports.Add(listed);
        }
        await AbortAsync(channel).ConfigureAwait(false);
        return exports;
    }

    /// <summary>nbd_start_negotiate's verdict on the server.</summary>
    private enum NbdServerStyle
    {
        Oldstyle,
        /// <summary>Newstyle without the fixed bit: only NBD_OPT_EXPORT_NAME.</summary>
        ExportNameOnly,
        Newstyle,
        NewstyleStructured,
    }

    /// <summary>
    /// nbd_start_negotiate: the magics, the flags exchange, and NBD_OPT_STRUCTURED_REPLY on a
    /// fixed-newstyle server (a refusal only means simple replies). <c>Zeroes</c>: the server still
    /// pads its NBD_OPT_EXPORT_NAME answer with 124 zero bytes.
    /// </summary>
    private static async Task<(NbdServerStyle Style, bool Zeroes)> StartAsync(NbdChannel channel, bool structuredReply, CancellationToken ct)
    {
        ulong magic = await channel.ReadUInt64Async("initial magic", ct).ConfigureAwait(false);
        if (magic != NbdWire.InitMagic) throw Fail($"Bad initial magic received: 0x{magic:x}");
        magic = await channel.ReadUInt64Async("server magic", ct).ConfigureAwait(false);
        if (magic == NbdWire.OldstyleMagic) return (NbdServerStyle.Oldstyle, true);
        if (magic != NbdWire.OptionMagic) throw Fail($"Bad server magic received: 0x{magic:x}");

        ushort serverFlags = await channel.ReadUInt16Async("server flags", ct).ConfigureAwait(false);
        bool fixedNewstyle = (serverFlags & NbdWire.FlagFixedNewstyle) != 0;
        bool zeroes = (serverFlags & NbdWire.FlagNoZeroes) == 0;
        uint clientFlags = (fixedNewstyle ? NbdWire.FlagFixedNewstyle : 0u) | (zeroes ? 0u : NbdWire.FlagNoZeroes);
        var flagBytes = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(flagBytes, clientFlags);
        await channel.WriteAsync(flagBytes, ct).ConfigureAwait(false);
        if (!fixedNewstyle) return (NbdServerStyle.ExportNameOnly, zeroes);
        bool structured = structuredReply && await RequestSimpleOptionAsync(channel, NbdWire.OptStructuredReply, ct).ConfigureAwait(false);
        return (structured ? NbdServerStyle.NewstyleStructured : NbdServerStyle.Newstyle, zeroes);
    }

    /// <summary>nbd_negotiate_finish_oldstyle: size and flags, the 124 reserved bytes left unread.</summary>
    private static async Task<NbdExportInfo> FinishOldstyleAsync(NbdChannel channel, CancellationToken ct)
    {
        ulong size = await channel.ReadUInt64Async("export length", ct).ConfigureAwait(false);
        uint flags = await channel.ReadUInt32Async("export flags", ct).ConfigureAwait(false);
        if (flags > 0xffff) throw Fail($"Unexpected export flags 0x{flags:x}");
        return new NbdExportInfo { Size = size, Flags = (ushort)flags };
    }

    private static NbdExportInfo Validate(NbdExportInfo info)
    {
        if (info.MinBlock != 0 && info.Size % info.MinBlock != 0)
            throw Fail($"export size {info.Size} is not multiple of minimum block size {info.MinBlock}");
        return info;
    }

    private static async Task SendOptionAsync(NbdChannel channel, uint option, ReadOnlyMemory<byte> data, CancellationToken ct)
    {
        var message = new byte[16 + data.Length];
        BinaryPrimitives.WriteUInt64BigEndian(message, NbdWire.OptionMagic);
        BinaryPrimitives.WriteUInt32BigEndian(message.AsSpan(8), option);
        BinaryPrimitives.WriteUInt32BigEndian(message.AsSpan(12), (uint)data.Length);
        data.Span.CopyTo(message.AsSpan(16));
        await channel.WriteAsync(message, ct).ConfigureAwait(false);
    }

    /// <summary>NBD_OPT_ABORT as a courtesy before dropping the connection; failures do not matter.</summary>
    private static async Task AbortAsync(NbdChannel channel)
    {
        try
        {
            await SendOptionAsync(channel, NbdWire.OptAbort, ReadOnlyMemory<byte>.Empty, CancellationToken.None).ConfigureAwait(false);
        }
        catch (IOException)
        {
            // The server may be gone already.
        }
    }

    private readonly record struct OptionReply(uint Option, uint Type, uint Length);

    private static async Task<OptionReply> ReceiveReplyAsync(NbdChannel channel, uint option, CancellationToken ct)
    {
        var header = new byte[20];
        try
        {
            await channel.ReadExactlyAsync(header, "option reply", ct).ConfigureAwait(false);
        }
        catch (NbdChannelException)
        {
            await AbortAsync(channel).ConfigureAwait(false);
            throw;
        }
        ulong magic = BinaryPrimitives.ReadUInt64BigEndian(header);
        var reply = new OptionReply(BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(8)),
            BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(12)), BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(16)));
        if (magic != NbdWire.OptionReplyMagic) throw await AbortWith(channel, "Unexpected option reply magic").ConfigureAwait(false);
        if (reply.Option != option)
        {
            throw await AbortWith(channel, $"Unexpected option type {reply.Option} ({NbdWire.OptionName(reply.Option)}), " +
                $"expected {option} ({NbdWire.OptionName(option)})").ConfigureAwait(false);
        }
        return reply;
    }

    private static async Task<Exception> AbortWith(NbdChannel channel, string message)
    {
        await AbortAsync(channel).ConfigureAwait(false);
        return Fail(message);
    }

    /// <summary>
    /// nbd_handle_reply_err: true for a success reply; false for an error that is ignored
    /// (unsupported, or any error of an option that is not strict); otherwise throws QEMU's message.
    /// </summary>
    private static async Task<bool> HandleReplyErrorAsync(NbdChannel channel, OptionReply reply, bool strict, CancellationToken ct)
    {
        if (!NbdWire.IsErrorReply(reply.Type)) return true;
        string? serverMessage = null;
        if (reply.Length > 0)
        {
            if (reply.Length > NbdWire.MaxBufferSize)
                throw await AbortWith(channel, $"server error {reply.Type} ({NbdWire.ReplyName(reply.Type)}) message is too long").ConfigureAwait(false);
            var text = new byte[reply.Length];
            try
            {
                await channel.ReadExactlyAsync(text, null, ct).ConfigureAwait(false);
            }
            catch (NbdChannelException e)
            {
                throw await AbortWith(channel, $"Failed to read option error {reply.Type} ({NbdWire.ReplyName(reply.Type)}) message: {e.Message}").ConfigureAwait(false);
            }
            serverMessage = Encoding.UTF8.GetString(text);
            int nul = serverMessage.IndexOf('\0');
            if (nul >= 0) serverMessage = serverMessage[..nul];
        }
        if (reply.Type == NbdWire.RepErrUnsup || !strict) return false;
        string option = $"{reply.Option} ({NbdWire.OptionName(reply.Option)})";
        string message = reply.Type switch
        {
            NbdWire.RepErrPolicy => $"Denied by server for option {option}",
            NbdWire.RepErrInvalid => $"Invalid parameters for option {option}",
            NbdWire.RepErrPlatform => $"Server lacks support for option {option}",
            NbdWire.RepErrTlsReqd => $"TLS negotiation required before option {option}\nDid you forget a valid tls-creds?",
            NbdWire.RepErrUnknown => "Requested export not available",
            NbdWire.RepErrShutdown => $"Server shutting down before option {option}",
            NbdWire.RepErrBlockSizeReqd => $"Server requires INFO_BLOCK_SIZE for option {option}",
            NbdWire.RepErrTooBig => $"option '{NbdWire.OptionName(reply.Option)}' payload is too big",
            _ => $"Unknown error code when asking for option {option}",
        };
        if (serverMessage is not null) message += $"\nserver reported: {serverMessage}";
        throw await AbortWith(channel, message).ConfigureAwait(false);
    }

    /// <summary>nbd_request_simple_option, not strict: true when the server acknowledged.</summary>
    private static async Task<bool> RequestSimpleOptionAsync(NbdChannel channel, uint option, CancellationToken ct)
    {
        await SendOptionAsync(channel, option, ReadOnlyMemory<byte>.Empty, ct).ConfigureAwait(false);
        var reply = await ReceiveReplyAsync(channel, option, ct).ConfigureAwait(false);
        if (!await HandleReplyErrorAsync(channel, reply, strict: false, ct).ConfigureAwait(false)) return false;
        if (reply.Type != NbdWire.RepAck)
        {
            throw await AbortWith(channel, $"Server answered option {option} ({NbdWire.OptionName(option)}) with unexpected reply " +
                $"{reply.Type} ({NbdWire.ReplyName(reply.Type)})").ConfigureAwait(false);
        }
        if (reply.Length != 0)
        {
            throw await AbortWith(channel, $"Option {option} ('{NbdWire.OptionName(option)}') response length is {reply.Length} (it should be zero)")
                .ConfigureAwait(false);
        }
        return true;
    }

    /// <summary>nbd_negotiate_simple_meta_context (base:allocation, or x-dirty-bitmap's context): its id, or null when the server has none.</summary>
    private static async Task<uint?> SetMetaContextAsync(NbdChannel channel, string export, string context, CancellationToken ct)
    {
        await SendMetaQueryAsync(channel, NbdWire.OptSetMetaContext, export, context, ct).ConfigureAwait(false);

        var first = await ReceiveMetaContextAsync(channel, NbdWire.OptSetMetaContext, ct).ConfigureAwait(false);
        if (first is null) return null;
        if (first.Value.Name != context)
        {
            throw await AbortWith(channel, $"Failed to negotiate meta context '{context}', server answered with different context '{first.Value.Name}'")
                .ConfigureAwait(false);
        }
        if (await ReceiveMetaContextAsync(channel, NbdWire.OptSetMetaContext, ct).ConfigureAwait(false) is not null)
            throw await AbortWith(channel, "Server answered with more than one context").ConfigureAwait(false);
        return first.Value.Id;
    }

    /// <summary>nbd_receive_one_meta_context: a context, or null at the ACK (or an ignored error).</summary>
    private static async Task<(uint Id, string Name)?> ReceiveMetaContextAsync(NbdChannel channel, uint option, CancellationToken ct)
    {
        var reply = await ReceiveReplyAsync(channel, option, ct).ConfigureAwait(false);
        if (!await HandleReplyErrorAsync(channel, reply, strict: false, ct).ConfigureAwait(false)) return null;
        if (reply.Type == NbdWire.RepAck)
        {
            if (reply.Length != 0) throw await AbortWith(channel, "Unexpected length to ACK response").ConfigureAwait(false);
            return null;
        }
        if (reply.Type != NbdWire.RepMetaContext)
        {
            throw await AbortWith(channel, $"Unexpected reply type {reply.Type} ({NbdWire.ReplyName(reply.Type)}), " +
                $"expected {NbdWire.RepMetaContext} ({NbdWire.ReplyName(NbdWire.RepMetaContext)})").ConfigureAwait(false);
        }
        if (reply.Length <= 4 || reply.Length > NbdWire.MaxBufferSize)
            throw await AbortWith(channel, $"Failed to negotiate meta context, server answered with unexpected length {reply.Length}").ConfigureAwait(false);
        uint id = await channel.ReadUInt32Async("context id", ct).ConfigureAwait(false);
        var name = new byte[reply.Length - 4];
        await channel.ReadExactlyAsync(name, "context name", ct).ConfigureAwait(false);
        return (id, Encoding.UTF8.GetString(name));
    }

    /// <summary>nbd_opt_info_or_go (GO or INFO, asking for block sizes): the export's description, or null when the server does not know the option.</summary>
    private static async Task<NbdExportInfo?> InfoOrGoAsync(NbdChannel channel, uint option, string export, CancellationToken ct)
    {
        byte[] name = Encoding.UTF8.GetBytes(export);
        var data = new byte[4 + name.Length + 2 + 2];
        BinaryPrimitives.WriteUInt32BigEndian(data, (uint)name.Length);
        name.CopyTo(data, 4);
        BinaryPrimitives.WriteUInt16BigEndian(data.AsSpan(4 + name.Length), 1);
        BinaryPrimitives.WriteUInt16BigEndian(data.AsSpan(6 + name.Length), NbdWire.InfoBlockSize);
        await SendOptionAsync(channel, option, data, ct).ConfigureAwait(false);

        ulong size = 0;
        ushort flags = 0;
        uint min = 0, opt = 0, max = 0;
        while (true)
        {
            var reply = await ReceiveReplyAsync(channel, option, ct).ConfigureAwait(false);
            if (!await HandleReplyErrorAsync(channel, reply, strict: true, ct).ConfigureAwait(false)) return null;
            if (reply.Type == NbdWire.RepAck)
            {
                if (reply.Length != 0) throw await AbortWith(channel, "server sent invalid NBD_REP_ACK").ConfigureAwait(false);
                if (flags == 0) throw await AbortWith(channel, "broken server omitted NBD_INFO_EXPORT").ConfigureAwait(false);
                return new NbdExportInfo { Size = size, Flags = flags, MinBlock = min, OptBlock = opt, MaxBlock = max };
            }
            if (reply.Type != NbdWire.RepInfo)
            {
                throw await AbortWith(channel, $"unexpected reply type {reply.Type} ({NbdWire.ReplyName(reply.Type)}), expected {NbdWire.RepInfo}")
                    .ConfigureAwait(false);
            }
            if (reply.Length < 2) throw await AbortWith(channel, $"NBD_REP_INFO length {reply.Length} is too short").ConfigureAwait(false);
            ushort type = await channel.ReadUInt16Async("info type", ct).ConfigureAwait(false);
            uint length = reply.Length - 2;
            switch (type)
            {
                case NbdWire.InfoExport:
                    if (length != 10) throw await AbortWith(channel, $"remaining export info len {length} is unexpected size").ConfigureAwait(false);
                    size = await channel.ReadUInt64Async("info size", ct).ConfigureAwait(false);
                    flags = await channel.ReadUInt16Async("info flags", ct).ConfigureAwait(false);
                    break;
                case NbdWire.InfoBlockSize:
                    if (length != 12) throw await AbortWith(channel, $"remaining export info len {length} is unexpected size").ConfigureAwait(false);
                    min = await channel.ReadUInt32Async("info minimum block size", ct).ConfigureAwait(false);
                    if (!BitOperations.IsPow2(min) || min > NbdWire.MaxBufferSize)
                        throw await AbortWith(channel, $"server minimum block size {min} is not a power of two").ConfigureAwait(false);
                    opt = await channel.ReadUInt32Async("info preferred block size", ct).ConfigureAwait(false);
                    if (!BitOperations.IsPow2(opt) || opt < min)
                        throw await AbortWith(channel, $"server preferred block size {opt} is not valid").ConfigureAwait(false);
                    max = await channel.ReadUInt32Async("info maximum block size", ct).ConfigureAwait(false);
                    if (max < opt || max % min != 0)
                        throw await AbortWith(channel, $"server maximum blocksize {max} is not valid").ConfigureAwait(false);
                    break;
                default:
                    await channel.SkipAsync(length, "info payload", ct).ConfigureAwait(false);
                    break;
            }
        }
    }

    /// <summary>nbd_send_meta_query: the export and one query, or none (every context, for LIST only).</summary>
    private static async Task SendMetaQueryAsync(NbdChannel channel, uint option, string export, string? query, CancellationToken ct)
    {
        byte[] name = Encoding.UTF8.GetBytes(export);
        byte[] text = query is null ? [] : Encoding.UTF8.GetBytes(query);
        var data = new byte[4 + name.Length + 4 + (query is null ? 0 : 4 + text.Length)];
        BinaryPrimitives.WriteUInt32BigEndian(data, (uint)name.Length);
        name.CopyTo(data, 4);
        BinaryPrimitives.WriteUInt32BigEndian(data.AsSpan(4 + name.Length), query is null ? 0u : 1u);
        if (query is not null)
        {
            BinaryPrimitives.WriteUInt32BigEndian(data.AsSpan(8 + name.Length), (uint)text.Length);
            text.CopyTo(data, 12 + name.Length);
        }
        await SendOptionAsync(channel, option, data, ct).ConfigureAwait(false);
    }

    /// <summary>
    /// nbd_list_meta_contexts: every context the server offers for the export. QEMU 3.0 servers
    /// forgot the qemu: contexts in an empty query, so when none came, they are asked for by prefix.
    /// </summary>
    private static async Task<IReadOnlyList<string>> ListMetaContextsAsync(NbdChannel channel, string export, CancellationToken ct)
    {
        await SendMetaQueryAsync(channel, NbdWire.OptListMetaContext, export, null, ct).ConfigureAwait(false);
        var contexts = new List<string>();
        bool seenQemu = false;
        while (true)
        {
            var context = await ReceiveMetaContextAsync(channel, NbdWire.OptListMetaContext, ct).ConfigureAwait(false);
            if (context is null && contexts.Count > 0 && !seenQemu)
            {
                seenQemu = true;
                await SendMetaQueryAsync(channel, NbdWire.OptListMetaContext, export, "qemu:", ct).ConfigureAwait(false);
                continue;
            }
            if (context is null) return contexts;
            seenQemu |= context.Value.Name.StartsWith("qemu:", StringComparison.Ordinal);
            contexts.Add(context.Value.Name);
        }
    }

    /// <summary>nbd_receive_list: one export of an NBD_OPT_LIST answer, or null at its end (or when the server does not list).</summary>
    private static async Task<(string Name, string? Description)?> ReceiveListEntryAsync(NbdChannel channel, CancellationToken ct)
    {
        var reply = await ReceiveReplyAsync(channel, NbdWire.OptList, ct).ConfigureAwait(false);
        if (!await HandleReplyErrorAsync(channel, reply, strict: true, ct).ConfigureAwait(false)) return null;
        if (reply.Type == NbdWire.RepAck)
        {
            if (reply.Length != 0) throw await AbortWith(channel, "length too long for option end").ConfigureAwait(false);
            return null;
        }
        if (reply.Type != NbdWire.RepServer)
        {
            throw await AbortWith(channel, $"Unexpected reply type {reply.Type} ({NbdWire.ReplyName(reply.Type)}), " +
                $"expected {NbdWire.RepServer} ({NbdWire.ReplyName(NbdWire.RepServer)})").ConfigureAwait(false);
        }
        if (reply.Length < 4 || reply.Length > NbdWire.MaxBufferSize)
            throw await AbortWith(channel, $"incorrect option length {reply.Length}").ConfigureAwait(false);
        uint nameLength = await channel.ReadUInt32Async("option name length", ct).ConfigureAwait(false);
        uint rest = reply.Length - 4;
        if (nameLength > rest || nameLength > NbdWire.MaxStringSize)
            throw await AbortWith(channel, "incorrect name length in server's list response").ConfigureAwait(false);
        var name = new byte[nameLength];
        await channel.ReadExactlyAsync(name, "export name", ct).ConfigureAwait(false);
        rest -= nameLength;
        string? description = null;
        if (rest > 0)
        {
            if (rest > NbdWire.MaxStringSize)
                throw await AbortWith(channel, "incorrect description length in server's list response").ConfigureAwait(false);
            var text = new byte[rest];
            await channel.ReadExactlyAsync(text, "export description", ct).ConfigureAwait(false);
            description = Encoding.UTF8.GetString(text);
        }
        return (Encoding.UTF8.GetString(name), description);
    }

    /// <summary>
    /// nbd_receive_query_exports: NBD_OPT_LIST, for a clear error before NBD_OPT_EXPORT_NAME. An empty
    /// list cannot be told from a server that does not list, so then the export is assumed to exist.
    /// </summary>
    private static async Task QueryExportsAsync(NbdChannel channel, string export, CancellationToken ct)
    {
        await SendOptionAsync(channel, NbdWire.OptList, ReadOnlyMemory<byte>.Empty, ct).ConfigureAwait(false);
        bool empty = true, found = false;
        while (await ReceiveListEntryAsync(channel, ct).ConfigureAwait(false) is { } entry)
        {
            empty = false;
            if (entry.Name == export) found = true;
        }
        if (!empty && !found) throw await AbortWith(channel, $"No export with name '{export}' available").ConfigureAwait(false);
    }

    private static NbdProtocolException Fail(string message) => new(message);
}
