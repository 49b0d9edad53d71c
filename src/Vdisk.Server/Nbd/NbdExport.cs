using Vdisk.Graph;
using Vdisk.Server.Exports;

namespace Vdisk.Server.Nbd;

/// <summary>
/// An NBD export: a user of one node under a name clients ask for. Its connections come and
/// go; the export outlives them until it is deleted.
/// </summary>
public sealed class NbdExport : BlockExport
{
    private readonly Lock _lock = new();
    private readonly List<NbdConnection> _clients = new();
    private readonly TaskCompletionSource _noClients = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Creates an export over an attached user.</summary>
    public NbdExport(string id, string name, string? description, DiskImage image, bool writable, bool shareRw, bool allocationDepth = false,
        IReadOnlyList<DirtyBitmap>? bitmaps = null)
        : base(id, image, writable)
    {
        Bitmaps = bitmaps ?? [];
        AllocationDepth = allocationDepth;
        Name = name;
        Description = description;
        ShareRw = shareRw;
    }

    /// <summary>The name clients ask for.</summary>
    public string Name { get; }

    /// <summary>Text shown by <c>nbdinfo</c> and in LIST replies, or null.</summary>
    public string? Description { get; }

    /// <summary>True when the export lets other writers in (raw images only).</summary>
    public bool ShareRw { get; }

    /// <summary>True when clients may select the qemu:allocation-depth context (qemu-nbd -A).</summary>
    public bool AllocationDepth { get; }

    /// <summary>The dirty bitmaps clients may read as qemu:dirty-bitmap:NAME contexts, in context id order.</summary>
    public IReadOnlyList<DirtyBitmap> Bitmaps { get; }

    /// <inheritdoc />
    public override string Type => "nbd";

    /// <summary>Connections using the export now.</summary>
    public override int ClientCount
    {
        get
        {
            lock (_lock) return _clients.Count;
        }
    }

    /// <summary>
    /// The transmission flags: what qemu-nbd 7.2 advertises (flush, FUA, trim, zeroes, fast zero,
    /// cache; DF with structured replies), READ_ONLY and no writes for read-only exports, and
    /// MULTI_CONN when the server admits several connections: every connection goes through the
    /// same node and descriptor, so a FLUSH (fdatasync) covers writes answered on any of them.
    /// </summary>
    public NbdTransmissionFlags TransmissionFlags(bool structuredReplies, bool multiConn)
    {
        var flags = NbdTransmissionFlags.HasFlags | NbdTransmissionFlags.SendFlush | NbdTransmissionFlags.SendFua | NbdTransmissionFlags.SendCache;
        if (Writable) flags |= NbdTransmissionFlags.SendTrim | NbdTransmissionFlags.SendWriteZeroes | NbdTransmissionFlags.SendFastZero;
        else flags |= NbdTransmissionFlags.ReadOnly;
        if (structuredReplies) flags |= NbdTransmissionFlags.SendDf;
        if (multiConn) flags |= NbdTransmissionFlags.CanMultiConn;
        return flags;
    }

    internal bool TryAddClient(NbdConnection connection)
    {
        lock (_lock)
        {
            if (ShuttingDown) return false;
            _clients.Add(connection);
            return true;
        }
    }

    internal void RemoveClient(NbdConnection connection)
    {
        lock (_lock)
        {
            _clients.Remove(connection);
            if (ShuttingDown && _clients.Count == 0) _noClients.TrySetResult();
        }
    }

    /// <summary>
    /// Starts deletion: refuses new clients and, for a hard delete, disconnects current ones.
    /// The returned task completes once no client is left.
    /// </summary>
    internal override Task BeginShutdown(bool disconnectClients)
    {
        NbdConnection[] clients;
        lock (_lock)
        {
            ShuttingDown = true;
            if (_clients.Count == 0) _noClients.TrySetResult();
            clients = _clients.ToArray();
        }
        if (disconnectClients)
            foreach (var c in clients) c.Abort();
        return _noClients.Task;
    }
}
