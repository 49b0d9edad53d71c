namespace Vdisk.Drivers.Nbd;

/// <summary>
/// The numbers of the NBD protocol a client needs (NetworkBlockDevice/nbd doc/proto.md), and
/// the names QEMU's client prints for them. All integers travel big-endian. The server in
/// Vdisk.Server keeps its own copy; this one stays with the client so that Core does not
/// depend on the server.
/// </summary>
internal static class NbdWire
{
    public const ulong InitMagic = 0x4e42444d41474943;        // "NBDMAGIC"
    public const ulong OptionMagic = 0x49484156454F5054;      // "IHAVEOPT"
    public const ulong OldstyleMagic = 0x00420281861253;
    public const ulong OptionReplyMagic = 0x3e889045565a9;
    public const uint RequestMagic = 0x25609513;
    public const uint SimpleReplyMagic = 0x67446698;
    public const uint StructuredReplyMagic = 0x668e33ef;

    public const ushort FlagFixedNewstyle = 1 << 0;
    public const ushort FlagNoZeroes = 1 << 1;

    public const uint OptExportName = 1;
    public const uint OptAbort = 2;
    public const uint OptList = 3;
    public const uint OptStartTls = 5;
    public const uint OptInfo = 6;
    public const uint OptGo = 7;
    public const uint OptStructuredReply = 8;
    public const uint OptListMetaContext = 9;
    public const uint OptSetMetaContext = 10;

    public const uint RepAck = 1;
    public const uint RepServer = 2;
    public const uint RepInfo = 3;
    public const uint RepMetaContext = 4;
    public const uint RepErrUnsup = 0x80000001;
    public const uint RepErrPolicy = 0x80000002;
    public const uint RepErrInvalid = 0x80000003;
    public const uint RepErrPlatform = 0x80000004;
    public const uint RepErrTlsReqd = 0x80000005;
    public const uint RepErrUnknown = 0x80000006;
    public const uint RepErrShutdown = 0x80000007;
    public const uint RepErrBlockSizeReqd = 0x80000008;
    public const uint RepErrTooBig = 0x80000009;

    public const ushort InfoExport = 0;
    public const ushort InfoName = 1;
    public const ushort InfoDescription = 2;
    public const ushort InfoBlockSize = 3;

    public const ushort TxHasFlags = 1 << 0;
    public const ushort TxReadOnly = 1 << 1;
    public const ushort TxSendFlush = 1 << 2;
    public const ushort TxSendFua = 1 << 3;
    public const ushort TxSendTrim = 1 << 5;
    public const ushort TxSendWriteZeroes = 1 << 6;
    public const ushort TxSendFastZero = 1 << 11;

    public const ushort CmdRead = 0;
    public const ushort CmdWrite = 1;
    public const ushort CmdDisconnect = 2;
    public const ushort CmdFlush = 3;
    public const ushort CmdTrim = 4;
    public const ushort CmdWriteZeroes = 6;
    public const ushort CmdBlockStatus = 7;

    public const ushort CmdFlagFua = 1 << 0;
    public const ushort CmdFlagNoHole = 1 << 1;
    public const ushort CmdFlagReqOne = 1 << 3;
    public const ushort CmdFlagFastZero = 1 << 4;

    public const ushort ReplyFlagDone = 1 << 0;
    public const ushort ChunkNone = 0;
    public const ushort ChunkOffsetData = 1;
    public const ushort ChunkOffsetHole = 2;
    public const ushort ChunkBlockStatus = 5;
    public const ushort ChunkError = 0x8001;
    public const ushort ChunkErrorOffset = 0x8002;

    public const uint StateHole = 1 << 0;
    public const uint StateZero = 1 << 1;

    public const int SimpleReplySize = 16;
    public const int StructuredReplySize = 20;
    public const int RequestSize = 28;

    /// <summary>QEMU's NBD_MAX_BUFFER_SIZE: the largest read or write it sends, and the longest option payload it accepts.</summary>
    public const int MaxBufferSize = 32 << 20;

    /// <summary>NBD_MAX_STRING_SIZE: export names and context names.</summary>
    public const int MaxStringSize = 4096;

    /// <summary>QEMU's NBD_MAX_MALLOC_PAYLOAD: the longest structured payload other than data it reads.</summary>
    public const int MaxMallocPayload = 1000;

    /// <summary>QEMU's MAX_NBD_REQUESTS: requests in flight on one connection.</summary>
    public const int MaxRequests = 16;

    public const string DefaultPort = "10809";

    public static bool IsErrorReply(uint type) => (type & 0x80000000) != 0;

    public static bool IsErrorChunk(ushort type) => (type & 0x8000) != 0;

    /// <summary>nbd_errno_to_system_errno: unknown numbers count as EINVAL.</summary>
    public static int ToSystemErrno(uint nbdError) => nbdError switch
    {
        0 => 0,
        1 => Native.Errno.EPERM,
        5 => Native.Errno.EIO,
        12 => Native.Errno.ENOMEM,
        28 => Native.Errno.ENOSPC,
        75 => 75,   // EOVERFLOW
        95 => Native.Errno.ENOTSUP,
        108 => 108, // ESHUTDOWN
        _ => Native.Errno.EINVAL,
    };

    /// <summary>nbd_opt_lookup.</summary>
    public static string OptionName(uint option) => option switch
    {
        OptExportName => "export name",
        OptAbort => "abort",
        OptList => "list",
        OptStartTls => "starttls",
        OptInfo => "info",
        OptGo => "go",
        OptStructuredReply => "structured reply",
        OptListMetaContext => "list meta context",
        OptSetMetaContext => "set meta context",
        _ => "<unknown>",
    };

    /// <summary>nbd_rep_lookup.</summary>
    public static string ReplyName(uint type) => type switch
    {
        RepAck => "ack",
        RepServer => "server",
        RepInfo => "info",
        RepMetaContext => "meta context",
        RepErrUnsup => "unsupported",
        RepErrPolicy => "denied by policy",
        RepErrInvalid => "invalid",
        RepErrPlatform => "platform lacks support",
        RepErrTlsReqd => "TLS required",
        RepErrUnknown => "export unknown",
        RepErrShutdown => "server shutting down",
        RepErrBlockSizeReqd => "block size required",
        RepErrTooBig => "option payload too big",
        _ => "<unknown>",
    };

    /// <summary>nbd_reply_type_lookup.</summary>
    public static string ChunkName(ushort type) => type switch
    {
        ChunkNone => "none",
        ChunkOffsetData => "data",
        ChunkOffsetHole => "hole",
        ChunkBlockStatus => "block status",
        ChunkError => "generic error",
        ChunkErrorOffset => "error at offset",
        _ => "<unknown>",
    };
}
