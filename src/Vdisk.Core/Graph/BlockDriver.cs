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

    /// <summary>Read-write, force-share, no-I/O, inactive.</summary>
    public NodeFlags Flags { get; }

    /// <summary>The flags of the whole open (NO_BACKING and the like).</summary>
    public OpenFlags OpenFlags { get; }

    /// <summary>The node's place in the graph's node order, when taken before it finished opening.</summary>
    internal long? GraphSequence { get; set; }

    /// <summary><c>cache.direct=on</c>: open with O_DIRECT.</summary>
    public bool CacheDirect { get; internal set; }

    /// <summary><c>cache.no-flush=on</c> (or an open with <see cref="OpenFlags.NoFlush"/>): flushes are not passed to the disk.</summary>
    public bool CacheNoFlush { get; internal set; }

    /// <summary>
    /// Opens the child named <paramref name="childName"/> (a nested option dictionary or a
    /// reference to an existing node by name), inheriting read-only and force-share.
    /// </summary>
    public BlockNode OpenChild(string childName, bool required = true) =>
        Opener.OpenChild(this, childName, required)!;

    /// <summary>Like <see cref="OpenChild"/> but returns null when the child is not given.</summary>
    public BlockNode? OpenOptionalChild(string childName) => Opener.OpenChild(this, childName, required: false);
}

/// <summary>The drivers vdisk knows.</summary>
public static class BlockDrivers
{
    private static readonly Dictionary<string, IBlockDriver> s_drivers = new(StringComparer.Ordinal);

    static BlockDrivers()
    {
        Register(new Drivers.File.FileDriver());
        Register(new Drivers.Raw.RawDriver());
        Register(new Drivers.Qcow2.Qcow2Driver());
    }

    /// <summary>Adds a driver.</summary>
    public static void Register(IBlockDriver driver) => s_drivers[driver.Name] = driver;

    /// <summary>The driver named <paramref name="name"/>, or null.</summary>
    public static IBlockDriver? Find(string name) => s_drivers.GetValueOrDefault(name);
}
