using Vdisk.Graph;

namespace Vdisk.Server.Qmp;

/// <summary>
/// The parts of QEMU's QAPI schema (qapi/block-core.json, block-export.json, sockets.json,
/// control.json; 7.2 plus the 10.0 additions for node activity) that vdisk serve accepts, both
/// for QMP arguments and for the command-line options that share their types.
/// </summary>
public static class QmpSchema
{
    private static QapiMember M(string name, QapiType type) => new(name, type);

    private static QapiMember O(string name, QapiType type) => new(name, type, Optional: true);

    private static readonly QapiScalar Str = QapiScalar.String, Bool = QapiScalar.Bool, Int = QapiScalar.Int;

    /// <summary>BlockdevCacheOptions.</summary>
    public static readonly QapiStruct BlockdevCacheOptions = new("BlockdevCacheOptions", [O("direct", Bool), O("no-flush", Bool)]);

    /// <summary>
    /// The BlockdevDriver enum as far as vdisk goes: the drivers whose schema vdisk has (each one
    /// a <see cref="BlockDrivers"/> name, which a unit test checks). A plain list: filtering the
    /// registry here cost every daemon start its first LINQ and array-pool use.
    /// </summary>
    internal static readonly string[] BlockdevDrivers =
        ["blkverify", "bochs", "copy-on-read", "file", "luks", "null-aio", "null-co", "qcow2", "quorum", "raw", "throttle", "vdi", "vhdx", "vmdk", "vpc"];

    /// <summary>Members every driver has (BlockdevOptions' base). <c>active</c> is QEMU 10.0's.</summary>
    private static readonly QapiMember[] BlockdevBase =
    [
        M("driver", new QapiEnum(BlockdevDrivers)),
        O("node-name", Str),
        O("discard", new QapiEnum("ignore", "unmap")),
        O("cache", BlockdevCacheOptions),
        O("read-only", Bool),
        O("auto-read-only", Bool),
        O("force-share", Bool),
        O("detect-zeroes", new QapiEnum("off", "on", "unmap")),
        O("active", Bool),
    ];

    /// <summary>BlockdevOptions: a flat union on <c>driver</c>.</summary>
    public static readonly QapiStruct BlockdevOptions = new("BlockdevOptions", BlockdevBase)
    {
        Discriminator = "driver",
        Variants = DriverMembers,
    };

    /// <summary>BlockdevRef: options of a new node, or the name of an existing one.</summary>
    public static readonly QapiAlternate BlockdevRef = new("BlockdevRef", BlockdevOptions, allowNull: false);

    /// <summary>BlockdevRefOrNull: as BlockdevRef, or null for "no backing file".</summary>
    public static readonly QapiAlternate BlockdevRefOrNull = new("BlockdevRefOrNull", BlockdevOptions, allowNull: true);

    private static readonly QapiMember[] FileMembers =
    [
        M("filename", Str),
        O("pr-manager", Str),
        O("locking", new QapiEnum("off", "on", "auto")),
        O("aio", new QapiEnum("threads", "native", "io_uring")),
        O("aio-max-batch", Int),
        O("drop-cache", Bool),
        O("x-check-cache-dropped", Bool),
        // vdisk's: take the image's locks in etcd as well (docs/cluster.md).
        O("cluster-lock-id", Str),
    ];

    private static readonly QapiMember[] RawMembers = [M("file", BlockdevRef), O("offset", Int), O("size", Int)];

    /// <summary>BlockdevOptionsGenericFormat: vpc, vhdx and vdi take only their file.</summary>
    private static readonly QapiMember[] GenericFormatMembers = [M("file", BlockdevRef)];

    private static readonly QapiMember[] Qcow2Members =
    [
        M("file", BlockdevRef),
        O("backing", BlockdevRefOrNull),
        O("lazy-refcounts", Bool),
        O("pass-discard-request", Bool),
        O("pass-discard-snapshot", Bool),
        O("pass-discard-other", Bool),
        O("overlap-check", QapiScalar.Any),
        O("cache-size", Int),
        O("l2-cache-size", Int),
        O("l2-cache-entry-size", Int),
        O("refcount-cache-size", Int),
        O("cache-clean-interval", Int),
        O("encrypt", QapiScalar.Any),
        O("data-file", BlockdevRef),
    ];

    /// <summary>BlockdevOptionsBlkverify.</summary>
    private static readonly QapiMember[] BlkverifyMembers = [M("test", BlockdevRef), M("raw", BlockdevRef)];

    /// <summary>BlockdevOptionsQuorum.</summary>
    private static readonly QapiMember[] QuorumMembers =
    [
        O("blkverify", Bool),
        M("children", new QapiList(BlockdevRef)),
        M("vote-threshold", Int),
        O("rewrite-corrupted", Bool),
        O("read-pattern", new QapiEnum("quorum", "fifo")),
    ];

    /// <summary>BlockdevOptionsThrottle.</summary>
    private static readonly QapiMember[] ThrottleMembers = [M("throttle-group", Str), M("file", BlockdevRef)];

    /// <summary>BlockdevOptionsGenericCOWFormat: vmdk takes its file and a backing node.</summary>
    private static readonly QapiMember[] GenericCowFormatMembers = [M("file", BlockdevRef), O("backing", BlockdevRefOrNull)];

    /// <summary>BlockdevOptionsLUKS (7.2: no detached header).</summary>
    private static readonly QapiMember[] LuksMembers = [M("file", BlockdevRef), O("key-secret", Str)];

    /// <summary>BlockdevOptionsNull (null-co and null-aio).</summary>
    private static readonly QapiMember[] NullMembers = [O("size", Int), O("latency-ns", QapiScalar.UInt64), O("read-zeroes", Bool)];

    /// <summary>BlockdevOptionsCor.</summary>
    private static readonly QapiMember[] CopyOnReadMembers = [M("file", BlockdevRef), O("bottom", Str)];

    private static QapiMember[]? DriverMembers(string driver) => driver switch
    {
        "copy-on-read" => CopyOnReadMembers,
        "vmdk" => GenericCowFormatMembers,
        "luks" => LuksMembers,
        "null-co" or "null-aio" => NullMembers,
        "file" => FileMembers,
        "raw" => RawMembers,
        "qcow2" => Qcow2Members,
        "vdi" or "vhdx" or "vpc" or "bochs" => GenericFormatMembers,
        "blkverify" => BlkverifyMembers,
        "quorum" => QuorumMembers,
        "throttle" => ThrottleMembers,
        _ => null,
    };


    /// <summary>SocketAddress (flat, as on the command line: <c>addr.type=unix,addr.path=P</c>).</summary>
    public static readonly QapiStruct SocketAddress = new("SocketAddress", [M("type", new QapiEnum("inet", "unix", "vsock", "fd"))])
    {
        Discriminator = "type",
        Variants = type => type switch
        {
            "unix" => UnixSocketAddressMembers,
            "inet" => InetSocketAddressMembers,
            "vsock" => [M("cid", Str), M("port", Str)],
            "fd" => [M("str", Str)],
            _ => null,
        },
    };

    private static readonly QapiMember[] UnixSocketAddressMembers = [M("path", Str), O("abstract", Bool), O("tight", Bool)];

    private static readonly QapiMember[] InetSocketAddressMembers =
    [
        // vdisk lets the host default to loopback; QEMU requires it.
        O("host", Str), M("port", Str), O("numeric", Bool), O("to", QapiScalar.UInt16),
        O("ipv4", Bool), O("ipv6", Bool), O("keep-alive", Bool), O("mptcp", Bool),
    ];

    private static QapiStruct Wrapped(string name, QapiMember[] members) => new(name, [M("data", new QapiStruct(name, members))]);

    /// <summary>SocketAddressLegacy (QMP nbd-server-start: <c>{"type": "unix", "data": {"path": P}}</c>).</summary>
    public static readonly QapiStruct SocketAddressLegacy = new("SocketAddressLegacy", [M("type", new QapiEnum("inet", "unix", "vsock", "fd"))])
    {
        Discriminator = "type",
        Variants = type => type switch
        {
            "unix" => Wrapped("UnixSocketAddress", UnixSocketAddressMembers).Members,
            "inet" => Wrapped("InetSocketAddress", InetSocketAddressMembers).Members,
            "vsock" => Wrapped("VsockSocketAddress", [M("cid", Str), M("port", Str)]).Members,
            "fd" => Wrapped("String", [M("str", Str)]).Members,
            _ => null,
        },
    };

    /// <summary>NbdServerOptions of the command line (<c>--nbd-server</c>).</summary>
    public static readonly QapiStruct NbdServerOptions = new("NbdServerOptions",
        [M("addr", SocketAddress), O("tls-creds", Str), O("tls-authz", Str), O("max-connections", QapiScalar.UInt32)]);

    /// <summary>Arguments of nbd-server-start.</summary>
    public static readonly QapiStruct NbdServerStart = new("nbd-server-start",
        [M("addr", SocketAddressLegacy), O("tls-creds", Str), O("tls-authz", Str), O("max-connections", QapiScalar.UInt32)]);

    /// <summary>
    /// BlockExportOptions (<c>--export</c> and block-export-add). vdisk adds <c>share-rw</c>; QEMU
    /// 10.0's <c>allow-inactive</c> is accepted (vdisk exports always serve inactive nodes read-only).
    /// </summary>
    public static readonly QapiStruct BlockExportOptions = new("BlockExportOptions",
    [
        M("type", new QapiEnum("nbd", "fuse")),
        M("id", Str),
        O("fixed-iothread", Bool),
        O("iothread", Str),
        M("node-name", Str),
        O("writable", Bool),
        O("writethrough", Bool),
        O("allow-inactive", Bool),
        O("share-rw", Bool),
    ])
    {
        Discriminator = "type",
        Variants = type => type switch
        {
            "nbd" => [O("name", Str), O("description", Str), O("bitmaps", new QapiList(Str)), O("allocation-depth", Bool)],
            "fuse" => [M("mountpoint", Str), O("growable", Bool), O("allow-other", new QapiEnum("off", "on", "auto"))],
            _ => null,
        },
    };

    /// <summary>Arguments of block-export-del.</summary>
    public static readonly QapiStruct BlockExportDel = new("block-export-del", [M("id", Str), O("mode", new QapiEnum("safe", "hard"))]);

    /// <summary>Arguments of blockdev-del.</summary>
    public static readonly QapiStruct BlockdevDel = new("blockdev-del", [M("node-name", Str)]);

    /// <summary>Arguments of blockdev-set-active (QEMU 10.0).</summary>
    public static readonly QapiStruct BlockdevSetActive = new("blockdev-set-active", [O("node-name", Str), M("active", Bool)]);

    /// <summary>Arguments of x-vdisk-blockdev-reserve (vdisk's extension for gapless hand-over).</summary>
    public static readonly QapiStruct BlockdevReserve = new("x-vdisk-blockdev-reserve", [O("node-name", Str), M("reserve", Bool)]);

    /// <summary>Arguments of query-named-block-nodes.</summary>
    public static readonly QapiStruct QueryNamedBlockNodes = new("query-named-block-nodes", [O("flat", Bool)]);

    /// <summary>Arguments of qmp_capabilities.</summary>
    public static readonly QapiStruct QmpCapabilities = new("qmp_capabilities", [O("enable", new QapiList(new QapiEnum("oob")))]);

    /// <summary>MonitorOptions (qapi/control.json), the argument of <c>--monitor</c>.</summary>
    public static readonly QapiStruct MonitorOptions = new("MonitorOptions",
        [O("id", Str), O("mode", new QapiEnum("readline", "control")), O("pretty", Bool), M("chardev", Str)]);

    /// <summary>Commands without arguments.</summary>
    public static readonly QapiStruct NoArguments = new("none", []);
}

/// <summary>A type decided when it is used (the set of drivers grows when drivers register).</summary>
public abstract class QapiTypeProxy : QapiType
{
    /// <summary>The type to check against now.</summary>
    protected abstract QapiType Resolve();

    /// <summary>The current type.</summary>
    public QapiType Current => Resolve();

    /// <inheritdoc />
    public override string ExpectedName => Current.ExpectedName;
}
