using Vdisk.Graph;

namespace Vdisk.Server.Exports;

/// <summary>
/// A block export of <c>vdisk serve</c> (QEMU's BlockExport): a user of one node — a
/// <see cref="DiskImage"/> attached to the daemon's graph, which holds the export's lock bytes —
/// offered to the world by some protocol (NBD, FUSE). Deleting it stops the protocol side
/// first, then lets go of the node.
/// </summary>
public abstract class BlockExport
{
    /// <summary>Creates an export over an attached user.</summary>
    protected BlockExport(string id, DiskImage image, bool writable)
    {
        Id = id;
        Image = image;
        Writable = writable;
    }

    /// <summary>The block export id (QMP <c>id</c>).</summary>
    public string Id { get; }

    /// <summary>BlockExportType as query-block-exports names it: <c>nbd</c>, <c>fuse</c>.</summary>
    public abstract string Type { get; }

    /// <summary>The user of the node: its permissions are the export's locks.</summary>
    public DiskImage Image { get; }

    /// <summary>The node exported.</summary>
    public BlockNode Node => Image.Root;

    /// <summary>True when clients may write.</summary>
    public bool Writable { get; }

    /// <summary>True once deletion has begun.</summary>
    public bool ShuttingDown { get; protected set; }

    /// <summary>Requests in flight, closed around node (in)activation.</summary>
    internal RequestGate Gate { get; } = new();

    /// <summary>Connections using the export now (FUSE has none to wait for).</summary>
    public virtual int ClientCount => 0;

    /// <summary>
    /// Starts deletion: no new clients or requests; with <paramref name="disconnectClients"/>,
    /// current clients are cut off. Completes once nobody uses the export any more.
    /// </summary>
    internal abstract Task BeginShutdown(bool disconnectClients);
}
