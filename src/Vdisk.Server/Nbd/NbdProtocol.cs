namespace Vdisk.Server.Nbd;

/// <summary>
/// Numbers of the NBD protocol (NetworkBlockDevice/nbd doc/proto.md), fixed newstyle only.
/// All integers travel big-endian.
/// </summary>
public static class NbdMagic
{
    /// <summary>"NBDMAGIC": the first 8 bytes the server sends.</summary>
    public const ulong Init = 0x4e42444d41474943;

    /// <summary>"IHAVEOPT": after the greeting, and before every option.</summary>
    public const ulong Option = 0x49484156454F5054;

    /// <summary>Starts every option reply.</summary>
    public const ulong OptionReply = 0x3e889045565a9;

    /// <summary>Starts every transmission request.</summary>
    public const uint Request = 0x25609513;

    /// <summary>Starts a simple reply.</summary>
    public const uint SimpleReply = 0x67446698;

    /// <summary>Starts a structured reply chunk.</summary>
    public const uint StructuredReply = 0x668e33ef;
}

/// <summary>Handshake flags (server) and client flags.</summary>
[Flags]
public enum NbdHandshakeFlags : ushort
{
    /// <summary>No flags.</summary>
    None = 0,
    /// <summary>NBD_FLAG_FIXED_NEWSTYLE / NBD_FLAG_C_FIXED_NEWSTYLE.</summary>
    FixedNewstyle = 1 << 0,
    /// <summary>NBD_FLAG_NO_ZEROES / NBD_FLAG_C_NO_ZEROES: no 124 zero bytes after EXPORT_NAME.</summary>
    NoZeroes = 1 << 1,
}

/// <summary>Options a client sends during the handshake.</summary>
public enum NbdOption : uint
{
    /// <summary>Choose an export and start transmission (no reply header).</summary>
    ExportName = 1,
    /// <summary>End the handshake; the server acknowledges.</summary>
    Abort = 2,
    /// <summary>List the exports.</summary>
    List = 3,
    /// <summary>Withdrawn.</summary>
    PeekExport = 4,
    /// <summary>Upgrade to TLS.</summary>
    StartTls = 5,
    /// <summary>Describe an export.</summary>
    Info = 6,
    /// <summary>Describe an export and start transmission.</summary>
    Go = 7,
    /// <summary>Use structured replies.</summary>
    StructuredReply = 8,
    /// <summary>List metadata contexts.</summary>
    ListMetaContext = 9,
    /// <summary>Select metadata contexts.</summary>
    SetMetaContext = 10,
    /// <summary>64-bit headers (QEMU 8.2+; not offered here).</summary>
    ExtendedHeaders = 11,
}

/// <summary>Reply types to options; errors have bit 31 set.</summary>
public enum NbdOptionReplyType : uint
{
    /// <summary>Done.</summary>
    Ack = 1,
    /// <summary>One export of a LIST.</summary>
    Server = 2,
    /// <summary>One piece of information of INFO/GO.</summary>
    Info = 3,
    /// <summary>One metadata context.</summary>
    MetaContext = 4,
    /// <summary>Unknown option.</summary>
    ErrUnsupported = 0x80000001,
    /// <summary>Forbidden by policy.</summary>
    ErrPolicy = 0x80000002,
    /// <summary>Malformed option.</summary>
    ErrInvalid = 0x80000003,
    /// <summary>Not on this platform.</summary>
    ErrPlatform = 0x80000004,
    /// <summary>TLS needed first.</summary>
    ErrTlsRequired = 0x80000005,
    /// <summary>No such export.</summary>
    ErrUnknown = 0x80000006,
    /// <summary>Server shutting down.</summary>
    ErrShutdown = 0x80000007,
    /// <summary>Block size negotiation needed.</summary>
    ErrBlockSizeRequired = 0x80000008,
    /// <summary>Request or reply too large.</summary>
    ErrTooBig = 0x80000009,
}

/// <summary>Kinds of NBD_REP_INFO.</summary>
public enum NbdInfoType : ushort
{
    /// <summary>Size and transmission flags (always sent).</summary>
    Export = 0,
    /// <summary>The export's name.</summary>
    Name = 1,
    /// <summary>A human-readable description.</summary>
    Description = 2,
    /// <summary>Minimum, preferred and maximum block size.</summary>
    BlockSize = 3,
}

/// <summary>Transmission flags of an export.</summary>
[Flags]
public enum NbdTransmissionFlags : ushort
{
    /// <summary>Always set.</summary>
    HasFlags = 1 << 0,
    /// <summary>Writes are refused.</summary>
    ReadOnly = 1 << 1,
    /// <summary>FLUSH is supported.</summary>
    SendFlush = 1 << 2,
    /// <summary>The FUA flag is supported.</summary>
    SendFua = 1 << 3,
    /// <summary>Rotational medium.</summary>
    Rotational = 1 << 4,
    /// <summary>TRIM is supported.</summary>
    SendTrim = 1 << 5,
    /// <summary>WRITE_ZEROES is supported.</summary>
    SendWriteZeroes = 1 << 6,
    /// <summary>The DF flag of READ is supported (structured replies only).</summary>
    SendDf = 1 << 7,
    /// <summary>Several connections see one consistent image, and FLUSH covers all of them.</summary>
    CanMultiConn = 1 << 8,
    /// <summary>RESIZE is supported.</summary>
    SendResize = 1 << 9,
    /// <summary>CACHE is supported.</summary>
    SendCache = 1 << 10,
    /// <summary>The FAST_ZERO flag is supported.</summary>
    SendFastZero = 1 << 11,
}

/// <summary>Transmission commands.</summary>
public enum NbdCommand : ushort
{
    /// <summary>Read.</summary>
    Read = 0,
    /// <summary>Write (payload follows the request).</summary>
    Write = 1,
    /// <summary>Disconnect after in-flight requests.</summary>
    Disconnect = 2,
    /// <summary>Flush to stable storage.</summary>
    Flush = 3,
    /// <summary>Discard.</summary>
    Trim = 4,
    /// <summary>Prefetch.</summary>
    Cache = 5,
    /// <summary>Write zeroes.</summary>
    WriteZeroes = 6,
    /// <summary>Query metadata contexts.</summary>
    BlockStatus = 7,
    /// <summary>Resize (experimental, not offered).</summary>
    Resize = 8,
}

/// <summary>Command flags.</summary>
[Flags]
public enum NbdCommandFlags : ushort
{
    /// <summary>No flags.</summary>
    None = 0,
    /// <summary>Force unit access.</summary>
    Fua = 1 << 0,
    /// <summary>WRITE_ZEROES must not punch holes.</summary>
    NoHole = 1 << 1,
    /// <summary>READ must answer with one data chunk.</summary>
    DontFragment = 1 << 2,
    /// <summary>BLOCK_STATUS returns one extent.</summary>
    RequestOne = 1 << 3,
    /// <summary>WRITE_ZEROES fails with ENOTSUP unless it is fast.</summary>
    FastZero = 1 << 4,
}

/// <summary>Structured reply chunk types.</summary>
public enum NbdChunkType : ushort
{
    /// <summary>No payload; always DONE.</summary>
    None = 0,
    /// <summary>Offset and data.</summary>
    OffsetData = 1,
    /// <summary>Offset and length of a range reading as zeroes.</summary>
    OffsetHole = 2,
    /// <summary>Context id and extents.</summary>
    BlockStatus = 5,
    /// <summary>Error number and message.</summary>
    Error = 0x8001,
    /// <summary>Error number, message and the offset it concerns.</summary>
    ErrorOffset = 0x8002,
}

/// <summary>Error numbers on the wire (not the host's errno).</summary>
public enum NbdError : uint
{
    /// <summary>Success.</summary>
    None = 0,
    /// <summary>Operation not permitted (write to a read-only or inactive export).</summary>
    Perm = 1,
    /// <summary>I/O error.</summary>
    IO = 5,
    /// <summary>Out of memory.</summary>
    NoMemory = 12,
    /// <summary>Invalid request.</summary>
    Invalid = 22,
    /// <summary>Write past the end.</summary>
    NoSpace = 28,
    /// <summary>Value too large.</summary>
    Overflow = 75,
    /// <summary>Not supported (a zero that would not be fast).</summary>
    NotSupported = 95,
    /// <summary>The server is shutting down.</summary>
    Shutdown = 108,
}

/// <summary>The limits this server applies.</summary>
public static class NbdLimits
{
    /// <summary>Largest READ or WRITE payload (QEMU's NBD_MAX_BUFFER_SIZE), advertised as maximum block size.</summary>
    public const int MaxPayload = 32 * 1024 * 1024;

    /// <summary>Preferred block size advertised.</summary>
    public const int PreferredBlockSize = 4096;

    /// <summary>Longest option payload accepted; longer ones are discarded and refused.</summary>
    public const int MaxOptionLength = 64 * 1024;

    /// <summary>Options longer than this are not even discarded: the connection is dropped (QEMU's NBD_MAX_BUFFER_SIZE).</summary>
    public const int MaxDiscardedOptionLength = 32 * 1024 * 1024;

    /// <summary>Longest string (export name, query, description) the protocol allows.</summary>
    public const int MaxString = 4096;

    /// <summary>Most extents in one BLOCK_STATUS reply (QEMU's limit: 1 MiB of extents).</summary>
    public const int MaxExtents = 1024 * 1024 / 8;

    /// <summary>The metadata context of allocation and zeroes (id <see cref="BaseAllocationId"/>).</summary>
    public const string BaseAllocation = "base:allocation";

    /// <summary>QEMU's id for base:allocation (NBD_META_ID_BASE_ALLOCATION).</summary>
    public const uint BaseAllocationId = 0;

    /// <summary>
    /// QEMU's context of the backing chain layer holding each extent (1 = the exported node, 0 =
    /// none), offered by exports with allocation-depth (qemu-nbd -A).
    /// </summary>
    public const string AllocationDepth = "qemu:allocation-depth";

    /// <summary>QEMU's id for qemu:allocation-depth (NBD_META_ID_ALLOCATION_DEPTH).</summary>
    public const uint AllocationDepthId = 1;

    /// <summary>The prefix of an exported bitmap's context (qemu-nbd -B NAME offers qemu:dirty-bitmap:NAME).</summary>
    public const string DirtyBitmapPrefix = "qemu:dirty-bitmap:";

    /// <summary>QEMU's id for the first exported bitmap (NBD_META_ID_DIRTY_BITMAP); the i-th has this plus i.</summary>
    public const uint DirtyBitmapId = 2;
}
