using Vdisk.Native;
using Vdisk.Options;
using Vdisk.Permissions;

namespace Vdisk.Graph;

/// <summary>A block driver: knows its option keys and how to open a node from them.</summary>
public interface IBlockDriver
{
    /// <summary>The driver name used in <c>driver=</c>.</summary>
    string Name { get; }

    /// <summary>True for protocol drivers (they have a filename and no children).</summary>
    bool IsProtocol { get; }

    /// <summary>Opens a node. Must take every option it understands from <see cref="NodeOpenContext.Options"/>.</summary>
    BlockNode Open(NodeOpenContext context);

    /// <summary>True when the format's nodes write compressed data (block_driver_can_compress).</summary>
    bool SupportsCompressedWrites => false;

    /// <summary>The format's create options (BlockDriver.create_opts, without the protocol's); null when it cannot create images.</summary>
    IReadOnlyList<QemuOptDesc>? CreateOptionList => null;

    /// <summary>
    /// bdrv_co_create_opts: creates the image <paramref name="options"/> describe (parsed from
    /// <see cref="CreateOptionList"/> and the file protocol's list, backing file resolved).
    /// </summary>
    /// <exception cref="CreateException">QEMU's refusal.</exception>
    Task CreateAsync(CreateOptions options, CancellationToken cancellationToken = default) =>
        throw new CreateException($"Format driver '{Name}' does not support image creation");

    /// <summary>The options <c>qemu-img amend</c> may change (BlockDriver.amend_opts), fresh for each use; null when the format has none.</summary>
    QemuOpts? CreateAmendOptions() => null;

    /// <summary>
    /// bdrv_measure: the bytes a new image of this format with <paramref name="options"/> (its
    /// create options, the size set) needs, for the contents of <paramref name="input"/> if not null.
    /// </summary>
    /// <exception cref="NativeIOException">ENOTSUP without measurement; the format's refusal of the options; a read error of the input.</exception>
    Task<MeasureResult> MeasureAsync(QemuOpts options, BlockNode? input, CancellationToken cancellationToken = default) =>
        throw new NativeIOException(Errno.ENOTSUP, $"Block driver '{Name}' does not support size measurement");
}

/// <summary>What qemu-img measure reports: bytes the new image needs now and fully allocated.</summary>
/// <param name="Required">Bytes for the data the input holds (or none) plus all metadata.</param>
/// <param name="FullyAllocated">Bytes when every cluster is allocated.</param>
/// <param name="BitmapsSize">"bitmaps size": bytes for the input's persistent bitmaps (qcow2 v3 target, input that supports bitmaps), else null.</param>
public sealed record MeasureResult(long Required, long FullyAllocated, long? BitmapsSize);
/// <summary>
/// A protocol driver that answers to filename prefixes (QEMU's <c>protocol_name</c> and
/// <c>bdrv_parse_filename</c>): <c>nbd://...</c> names the nbd driver, which turns the rest of the
/// filename into its options.
/// </summary>
public interface IProtocolFilenameParser
{
    /// <summary>The prefixes before ':' that select this driver.</summary>
    IReadOnlyList<string> Protocols { get; }

    /// <summary>Adds the options <paramref name="filename"/> stands for to <paramref name="options"/>.</summary>
    /// <exception cref="OptionException">The filename is malformed (QEMU's wording).</exception>
    void ParseFilename(string filename, OptionDict options);
}

/// <summary>Everything a driver needs to open one node.</summary>
public sealed class NodeOpenContext
{
    internal NodeOpenContext(GraphOpener opener, NodeOptions options, string nodeName, NodeFlags flags, OpenFlags openFlags)
    {
        Opener = opener;
        Options = options;
        NodeName = nodeName;
        Flags = flags;
        OpenFlags = openFlags;
    }

    /// <summary>Opens child nodes.</summary>
    public GraphOpener Opener { get; }

    /// <summary>This node's options (the common ones are already taken).</summary>
    public NodeOptions Options { get; }

    /// <summary>The node's name.</summary>
    public string NodeName { get; }

    /// <summary>Read-write, auto-read-only, force-share, no-I/O, inactive.</summary>
    public NodeFlags Flags { get; private set; }

    /// <summary>
    /// bdrv_apply_auto_read_only, for drivers that can only read: a read-write open becomes
    /// read-only (children opened afterwards inherit it) when auto-read-only is set, and fails
    /// with EACCES "Image is read-only" otherwise.
    /// </summary>
    /// <exception cref="NativeIOException">The node is read-write without auto-read-only.</exception>
    public void ApplyAutoReadOnly()
    {
        if ((Flags & NodeFlags.ReadWrite) == 0) return;
        if ((Flags & NodeFlags.AutoReadOnly) == 0) throw new NativeIOException(Errno.EACCES, "Image is read-only");
        Flags &= ~NodeFlags.ReadWrite;
    }

    /// <summary>The flags of the whole open (NO_BACKING and the like).</summary>
    public OpenFlags OpenFlags { get; }

    /// <summary>The node's place in the graph's node order, when taken before it finished opening.</summary>
    internal long? GraphSequence { get; set; }

    /// <summary>The cluster-lock settings of the graph (null: the environment's).</summary>
    public Locking.Cluster.ClusterLockSettings? ClusterLocks => Opener.Graph.ClusterLocks;

    /// <summary><c>cache.direct=on</c>: open with O_DIRECT.</summary>
    public bool CacheDirect { get; internal set; }

    /// <summary><c>cache.no-flush=on</c> (or an open with <see cref="OpenFlags.NoFlush"/>): flushes are not passed to the disk.</summary>
    public bool CacheNoFlush { get; internal set; }

    /// <summary>
    /// The open flags a child opens with: the parent's, with its cache.direct and cache.no-flush
    /// as the child's defaults (bdrv_inherited_options and bdrv_backing_options pass both down).
    /// </summary>
    internal OpenFlags ChildOpenFlags =>
        (OpenFlags & ~(OpenFlags.NoCache | OpenFlags.NoFlush))
        | (CacheDirect ? OpenFlags.NoCache : OpenFlags.None)
        | (CacheNoFlush ? OpenFlags.NoFlush : OpenFlags.None);

    /// <summary>
    /// Opens the child named <paramref name="childName"/> (a nested option dictionary or a
    /// reference to an existing node by name), inheriting read-only and force-share.
    /// </summary>
    public BlockNode OpenChild(string childName, bool required = true) =>
        Opener.OpenChild(this, childName, required)!;

    /// <summary>
    /// Opens a pure data child of a node that is no format (blkverify's <c>test</c>): given as a
    /// filename without a driver, its format is probed, as bdrv_inherited_options clears
    /// BDRV_O_PROTOCOL for such children.
    /// </summary>
    public BlockNode OpenProbedChild(string childName) => Opener.OpenChild(this, childName, required: true, probeFormat: true)!;

    /// <summary>
    /// Opens one element of a child array (quorum's <c>children.N</c>), given as its option value,
    /// with its format probed as <see cref="OpenProbedChild(string)"/> does.
    /// </summary>
    public BlockNode OpenProbedChild(string childName, OptionValue value) => Opener.OpenChild(this, childName, value, required: true, probeFormat: true)!;

    /// <summary>Like <see cref="OpenChild"/> but returns null when the child is not given.</summary>
    public BlockNode? OpenOptionalChild(string childName) => Opener.OpenChild(this, childName, required: false);
}

/// <summary>The drivers vdisk knows.</summary>
public static class BlockDrivers
{
    // Each driver is made at its first use: a one-shot command needs two or three of them, and
    // making all of them touched their types and code at every start (2% of `vdisk io`).
    private static readonly string[] s_names =
    [
        "file", Drivers.File.FileDriver.HostDeviceName, "host_cdrom", "raw", "qcow2", "vpc", "vhdx", "vdi", "bochs", "vmdk",
        "luks", "copy-on-read", "nbd", "null-co", "null-aio", "blkdebug", "blkverify", "quorum", Drivers.Throttle.ThrottleDriver.DriverName,
    ];

    /// <summary>The drivers that parse filenames with a protocol prefix ("nbd+unix://", "blkdebug:").</summary>
    private static readonly string[] s_filenameProtocolDrivers = ["nbd", "null-co", "null-aio", "blkdebug", "blkverify"];

    /// <summary>The drivers made so far, at their name's index in <see cref="s_names"/>.</summary>
    /// <remarks>An array searched by name, not a dictionary: a dictionary's first lookup resolves its
    /// comparer's interface calls, ~1% of a one-shot command, for nineteen names.</remarks>
    private static readonly IBlockDriver?[] s_made = new IBlockDriver?[s_names.Length];

    private static IBlockDriver? Make(string name) => name switch
    {
        "file" or Drivers.File.FileDriver.HostDeviceName or "host_cdrom" => new Drivers.File.FileDriver(name),
        "raw" => new Drivers.Raw.RawDriver(),
        "qcow2" => new Drivers.Qcow2.Qcow2Driver(),
        "vpc" => new Drivers.Vpc.VpcDriver(),
        "vhdx" => new Drivers.Vhdx.VhdxDriver(),
        "vdi" => new Drivers.Vdi.VdiDriver(),
        "bochs" => new Drivers.Bochs.BochsDriver(),
        "vmdk" => new Drivers.Vmdk.VmdkDriver(),
        "luks" => new Drivers.Luks.LuksDriver(),
        "copy-on-read" => new Drivers.CopyOnRead.CopyOnReadDriver(),
        "nbd" => new Drivers.Nbd.NbdDriver(),
        "null-co" or "null-aio" => new Drivers.Null.NullDriver(name),
        "blkdebug" => new Drivers.Blkdebug.BlkdebugDriver(),
        "blkverify" => new Drivers.Blkverify.BlkverifyDriver(),
        "quorum" => new Drivers.Quorum.QuorumDriver(),
        Drivers.Throttle.ThrottleDriver.DriverName => new Drivers.Throttle.ThrottleDriver(),
        _ => null,
    };

    /// <summary>
    /// The names of every driver, sorted as bdrv_iterate_format sorts them (strcmp order): the
    /// "Supported formats:" list of qemu-img's help.
    /// </summary>
    public static IReadOnlyList<string> Names
    {
        get
        {
            var names = new List<string>(s_names);
            names.Sort(StringComparer.Ordinal);
            return names;
        }
    }

    /// <summary>Whether vdisk has a driver called <paramref name="name"/> (without making it).</summary>
    public static bool Exists(string name) => IndexOf(name) >= 0;

    private static int IndexOf(string name)
    {
        for (int i = 0; i < s_names.Length; i++)
        {
            if (string.Equals(s_names[i], name, StringComparison.Ordinal)) return i;
        }
        return -1;
    }

    /// <summary>The driver named <paramref name="name"/>, or null.</summary>
    public static IBlockDriver? Find(string name)
    {
        int index = IndexOf(name);
        if (index < 0) return null;
        lock (s_made)
        {
            return s_made[index] ??= Make(name);
        }
    }

    /// <summary>
    /// bdrv_find_protocol for a filename given on the command line: no prefix (no ':' before
    /// the first '/') or <c>file:</c> means the file driver; a known prefix its driver; any other
    /// prefix is QEMU's "Unknown protocol 'X'".
    /// </summary>
    public static IBlockDriver FindProtocol(string filename)
    {
        // QEMU tries host-device detection first, so device names with colons stay device names.
        if (Native.FileSystemEntry.IsDevice(filename)) return Find(Drivers.File.FileDriver.HostDeviceName)!;
        int end = filename.IndexOfAny([':', '/']);
        if (end < 0 || filename[end] != ':') return Find("file")!;
        string protocol = filename[..end];
        if (protocol == "file") return Find("file")!;
        foreach (string name in s_filenameProtocolDrivers)
        {
            var driver = Find(name)!;
            if (((IProtocolFilenameParser)driver).Protocols.Contains(protocol)) return driver;
        }
        throw new OptionException($"Unknown protocol '{protocol}'");
    }

    /// <summary>
    /// The options of a protocol node for <paramref name="filename"/> as given on the command
    /// line: <c>{filename}</c> for files, the parsed options and <c>driver</c> for a protocol
    /// that parses its filenames (<paramref name="driver"/> forces one, as <c>-f nbd</c> does).
    /// </summary>
    public static void FillProtocolOptions(OptionDict options, string filename, IBlockDriver? driver = null)
    {
        driver ??= FindProtocol(filename);
        if (driver is IProtocolFilenameParser parser)
        {
            parser.ParseFilename(filename, options);
            // The parser gives flat keys ("server.path"); the opener reads nested ones.
            var nested = OptionTree.Crumple(options);
            foreach (var key in options.Entries.Select(e => e.Key).ToList()) options.Remove(key);
            foreach (var (key, value) in nested.Entries) options.Set(key, value);
            options.Set("driver", driver.Name);
            return;
        }
        options.Set("filename", filename);
    }
}
