using Vdisk.Drivers.Raw;
using Vdisk.Graph;
using Vdisk.Locking;
using Vdisk.Native;
using Vdisk.Options;
using Vdisk.Permissions;
using Vdisk.Server.Exports;
using Vdisk.Server.Fuse;
using Vdisk.Server.Nbd;
using Vdisk.Server.Qmp;
using static Vdisk.Server.Qmp.QmpJson;

namespace Vdisk.Server.Daemon;

/// <summary>
/// The state of <c>vdisk serve</c>: a long-lived block graph, the NBD server and its exports,
/// and the QMP monitors. Every operation the command line and QMP offer is a method here, run
/// one at a time (QEMU's main-loop lock), with QEMU's error messages as
/// <see cref="DaemonException"/>.
/// </summary>
public sealed partial class StorageDaemon : IAsyncDisposable
{
    private readonly SemaphoreSlim _control = new(1, 1);
    private readonly List<BlockExport> _exports = new();
    private readonly HashSet<string> _exportIds = new(StringComparer.Ordinal);
    private readonly Dictionary<string, SocketListener> _chardevs = new(StringComparer.Ordinal);
    private readonly List<QmpServer> _monitors = new();
    private readonly TaskCompletionSource _quit = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private NbdServer? _nbd;
    private bool _shutDown;
    private List<Action<bool>>? _acceptAfterStartup;
    private NbdServer? _nbdOfCommandLine;

    /// <summary>The daemon's nodes.</summary>
    public BlockGraph Graph { get; }

    /// <summary>The NBD server, once started.</summary>
    public NbdServer? NbdServer => _nbd;

    /// <summary>Completes when a client asked the daemon to quit.</summary>
    public Task QuitRequested => _quit.Task;

    /// <summary>Exports, oldest first.</summary>
    public IReadOnlyList<BlockExport> Exports => _exports;

    /// <summary>
    /// The command line is being applied: servers started now listen, but accept nobody until
    /// <see cref="RunMainLoop"/>. QEMU's accept handlers first run in its main loop, after
    /// every option, so a client that connects early waits in the backlog rather than finding
    /// the NBD export of a later <c>--export</c> missing.
    /// </summary>
    public void BeginStartup() => _acceptAfterStartup ??= new List<Action<bool>>();

    /// <summary>
    /// The command line is applied: the servers it started accept clients from now on, and the
    /// calling thread serves as the daemon's main loop, as QEMU's main thread does: it accepts
    /// the clients of the command line's NBD server, blocking, until <paramref name="until"/>
    /// completes or that server stops (nbd-server-stop). Returns at once when the command line
    /// started no NBD server, or when called on a thread-pool thread (one that must not block).
    /// </summary>
    public void RunMainLoop(Task until)
    {
        var pending = _acceptAfterStartup;
        _acceptAfterStartup = null;
        // The caller holds no lock: the monitors' accept loops begin on it and post their first
        // accept without a hop to the pool (a client's accept still completes on the pool).
        pending?.ForEach(start => start(true));
        var server = _nbdOfCommandLine;
        _nbdOfCommandLine = null;
        if (server is null) return;
        if (Thread.CurrentThread.IsThreadPoolThread)
        {
            server.Start();
            return;
        }
        until.ContinueWith(_ => server.StopAccepting(), CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        server.AcceptOnCallingThread();
    }

    /// <summary>
    /// Starts accepting on a server now, or once start-up is complete. Now means inside a QMP
    /// command, under the control lock: the loop then begins on the thread pool, where a client
    /// that negotiates at once cannot wait on that lock from this thread.
    /// </summary>
    private void AcceptClients(Action<bool> start)
    {
        if (_acceptAfterStartup is { } pending) pending.Add(start);
        else start(false);
    }

    /// <summary>Runs <paramref name="operation"/> alone: operations never interleave.</summary>
    public async Task<T> RunExclusiveAsync<T>(Func<Task<T>> operation)
    {
        await _control.WaitAsync().ConfigureAwait(false);
        try
        {
            if (_shutDown) throw new DaemonException("The daemon is shutting down");
            return await operation().ConfigureAwait(false);
        }
        finally
        {
            _control.Release();
        }
    }

    // ------------------------------------------------------------------ nodes

    /// <summary>
    /// blockdev-add and <c>--blockdev</c>: opens a node (and the children it defines) from
    /// options already checked against <see cref="QmpSchema.BlockdevOptions"/>. The one place
    /// where the daemon opens images, so that waiting for locks can be added around it.
    /// A node created with <c>active=off</c> takes no locks until activated.
    /// </summary>
    public BlockNode AddBlockdev(OptionDict options, LockWaitOptions? wait = null, CancellationToken cancellationToken = default)
    {
        if (ExportRequest.Text(options, "node-name") is null)
            throw new DaemonException("'node-name' must be specified for the root node");
        options = options.Clone();
        bool active = ExportRequest.Flag(options, "active") ?? true;
        options.Remove("active");
        var flags = OpenFlags.ReadWrite | (active ? OpenFlags.None : OpenFlags.Inactive);
        try
        {
            // --wait (command line only): queue behind a holder instead of failing. Each try
            // gets its own copy of the options, which opening rewrites.
            return wait is null
                ? Graph.AddNode(options, flags)
                : LockWait.Run(() => Graph.AddNode(options.Clone(), flags), wait, cancellationToken);
        }
        catch (LockConflictException e) when (e.FromTest)
        {
            throw new DaemonException(UserErrors.MessageNamingHolder(e)!, e.Hint);
        }
        catch (Exception e) when (UserErrors.MessageNamingHolder(e) is { } message)
        {
            throw new DaemonException(message);
        }
    }

    /// <summary>blockdev-del.</summary>
    public async Task DeleteBlockdevAsync(string nodeName)
    {
        try
        {
            await Graph.DeleteNodeAsync(nodeName).ConfigureAwait(false);
        }
        catch (InvalidOperationException e)
        {
            throw new DaemonException(e.Message);
        }
    }

    /// <summary>
    /// blockdev-set-active (QEMU 10.0): hands a node's locks over for migration. In-flight
    /// export requests finish first and new ones wait (a drained section); the node is flushed
    /// before it lets go of its locks.
    /// </summary>
    public async Task SetActiveAsync(string? nodeName, bool active)
    {
        BlockNode? node = null;
        if (nodeName is not null)
            node = Graph.Find(nodeName) ?? throw new DaemonException($"Failed to find node with node-name='{nodeName}'");
        var gates = _exports.Select(e => e.Gate).ToArray();
        await Task.WhenAll(gates.Select(g => g.CloseAsync())).ConfigureAwait(false);
        try
        {
            var targets = node is null ? Roots() : [node];
            if (active)
            {
                try
                {
                    if (node is null) Activation.ActivateAll(Graph);
                    else Activation.Activate(node);
                }
                catch (Exception e) when (UserErrors.MessageNamingHolder(e) is { } message)
                {
                    throw new DaemonException(message);
                }
                // The node's own locks now cover what a reservation held.
                foreach (var t in targets) Activation.ReleaseReservation(t);
                return;
            }
            // Inactivating an inactive node also withdraws its reservation (a cancelled hand-over).
            foreach (var t in targets.Where(t => t.IsInactive)) Activation.ReleaseReservation(t);
            foreach (var root in targets.Where(r => !r.IsInactive)) await FlushQuietlyAsync(root).ConfigureAwait(false);
            try
            {
                if (node is null) Activation.InactivateAll(Graph);
                else Activation.Inactivate(node);
            }
            catch (InvalidOperationException e)
            {
                throw new DaemonException(node is null ? "Failed to inactivate all nodes" : e.Message);
            }
        }
        finally
        {
            foreach (var g in gates) g.Reopen();
        }
    }

    private BlockNode[] Roots() => Graph.Nodes.Values.Where(n => !n.Parents.Any(p => p.Parent is BlockNode)).ToArray();

    /// <summary>
    /// x-vdisk-blockdev-reserve (vdisk's extension, see <see cref="Activation.Reserve"/>): on an
    /// inactive destination, refuse new writers before the source lets go, so that a hand-over
    /// leaves no moment in which a third program could start writing.
    /// </summary>
    public void Reserve(string? nodeName, bool reserve)
    {
        BlockNode[] targets = nodeName is null ? Roots()
            : [Graph.Find(nodeName) ?? throw new DaemonException($"Failed to find node with node-name='{nodeName}'")];
        foreach (var t in targets)
        {
            if (!reserve)
            {
                Activation.ReleaseReservation(t);
                continue;
            }
            if (!t.IsInactive) throw new DaemonException($"Node '{t.NodeName}' is active: its own locks already refuse what it does not share");
            try
            {
                Activation.Reserve(t);
            }
            catch (Exception e) when (UserErrors.MessageNamingHolder(e) is { } message)
            {
                throw new DaemonException(message);
            }
        }
    }

    private static async Task FlushQuietlyAsync(BlockNode node)
    {
        try
        {
            await node.FlushAsync().ConfigureAwait(false);
        }
        catch (IOException e)
        {
            Diagnostics.WarningSink?.Invoke($"Failed to flush node '{node.NodeName}': {e.Message}");
        }
    }

    // ------------------------------------------------------------------ NBD server and exports

    /// <summary>nbd-server-start and <c>--nbd-server</c>.</summary>
    public void StartNbdServer(NbdServerRequest request)
    {
        if (_nbd is not null) throw new DaemonException("NBD server already running");
        _nbd = new NbdServer(request.Address, request.MaxConnections);
        // The command line's server accepts on the main loop; one that QMP starts, on the pool.
        if (_acceptAfterStartup is not null) _nbdOfCommandLine = _nbd;
        else _nbd.Start();
    }

    /// <summary>nbd-server-stop: deletes every export (disconnecting clients), then stops listening.</summary>
    public async Task StopNbdServerAsync()
    {
        var server = _nbd ?? throw new DaemonException("NBD server not running");
        await DeleteAllExportsAsync("nbd").ConfigureAwait(false);
        _nbd = null;
        await server.StopAsync().ConfigureAwait(false);
    }

    /// <summary>
    /// The permissions an export takes on its node. On raw (and a bare protocol node) an export
    /// behaves like a VM's virtio-blk disk: it refuses other writers unless <c>share-rw=on</c>.
    /// On formats such as qcow2 it takes exactly what qemu-storage-daemon's export takes (the
    /// format refuses other writers on its file anyway).
    /// </summary>
    public static PermissionPair ExportPermissions(BlockNode node, bool writable, bool shareRw) =>
        node is RawNode || node.IsProtocol
            ? BackendPermissions.GuestDevice(readOnly: !writable, resizable: true, shareRw)
            : BackendPermissions.StorageDaemonExport(writable);

    /// <summary>
    /// block-export-add and <c>--export</c>, checked in QEMU's order. <paramref name="permissions"/>
    /// overrides <see cref="ExportPermissions"/> (qemu-nbd's export takes qsd's on every format).
    /// A FUSE export takes qemu-storage-daemon's on every format (it exists for QEMU's users, not
    /// as a VM's disk).
    /// </summary>
    public async Task AddExportAsync(ExportRequest request, PermissionPair? permissions = null)
    {
        if (!BlockGraph.IsValidNodeName(request.Id)) throw new DaemonException("Invalid block export id");
        if (_exportIds.Contains(request.Id)) throw new DaemonException($"Block export id '{request.Id}' is already in use");
        var node = Graph.Find(request.NodeName) ?? throw new DaemonException($"Cannot find device='' nor node-name='{request.NodeName}'");
        var wanted = permissions ?? (request.Fuse is { } fuseOptions
            ? BackendPermissions.StorageDaemonFuseExport(request.Writable, fuseOptions.Growable)
            : ExportPermissions(node, request.Writable, request.ShareRw));
        DiskImage image;
        try
        {
            image = DiskImage.Attach(node, wanted, Graph, request.Id);
        }
        catch (Exception e) when (UserErrors.MessageNamingHolder(e) is { } message)
        {
            throw new DaemonException(message);
        }
        try
        {
            if (request.Fuse is { } fuse)
            {
                AddFuseExport(request, fuse, image);
                return;
            }
            if (_nbd is null) throw new DaemonException("NBD server not running");
            if (System.Text.Encoding.UTF8.GetByteCount(request.Name) > NbdLimits.MaxString)
                throw new DaemonException($"export name '{request.Name}' too long");
            if (request.Description is { } d && System.Text.Encoding.UTF8.GetByteCount(d) > NbdLimits.MaxString)
                throw new DaemonException($"description '{d}' too long");
            // A loop, not Select/ToList: LINQ's first generic use costs every daemon start its type loading.
            var bitmaps = new List<DirtyBitmap>();
            foreach (var name in request.Bitmaps ?? []) bitmaps.Add(ExportBitmap(node, name, readOnly: !request.Writable));
            var export = new NbdExport(request.Id, request.Name, request.Description, image, request.Writable, request.ShareRw, request.AllocationDepth, bitmaps);
            _nbd.AddExport(export);
            _exports.Add(export);
            _exportIds.Add(export.Id);
        }
        catch
        {
            await image.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>
    /// fuse_export_create: one export per mount point (compared as given, as QEMU does), which
    /// must be a regular file.
    /// </summary>
    private void AddFuseExport(ExportRequest request, FuseExportRequest fuse, DiskImage image)
    {
        if (_exports.OfType<FuseExport>().Any(e => e.Mountpoint == fuse.Mountpoint))
            throw new DaemonException($"There already is a FUSE export on '{fuse.Mountpoint}'");
        var export = FuseExport.Mount(request.Id, image, request.Writable, fuse.Mountpoint, fuse.Growable, fuse.AllowOther);
        _exports.Add(export);
        _exportIds.Add(export.Id);
    }

    /// <summary>
    /// nbd_export_create's lookup of an exported bitmap: the first node down the filter and
    /// backing chain that has it; an enabled bitmap on a writable node would change under a
    /// read-only export, and an inconsistent one cannot be read.
    /// </summary>
    private static DirtyBitmap ExportBitmap(BlockNode node, string name, bool readOnly)
    {
        for (BlockNode? n = node; n is not null; n = BlockChain.FilterOrCowOf(n))
        {
            if (n.DirtyBitmaps.FirstOrDefault(b => b.Name == name) is not { } bitmap) continue;
            if (readOnly && !n.IsReadOnly && bitmap.Enabled)
                throw new DaemonException($"Enabled bitmap '{name}' incompatible with readonly export");
            if (bitmap.Inconsistent)
                throw new DaemonException($"Bitmap '{name}' is inconsistent and cannot be used");
            return bitmap;
        }
        throw new DaemonException($"Bitmap '{name}' is not found");
    }

    /// <summary>
    /// block-export-del. Without clients the export goes at once (and its BLOCK_EXPORT_DELETED
    /// event comes before the reply, as in QEMU); <c>mode=safe</c> refuses while clients are
    /// connected; <c>mode=hard</c> returns the rest of the work — disconnecting clients, then
    /// the event — to be run after the reply.
    /// </summary>
    public async Task<Func<Task>?> DeleteExportAsync(string id, bool hard)
    {
        var export = _exports.FirstOrDefault(e => e.Id == id) ?? throw new DaemonException($"Export '{id}' is not found");
        if (export.ShuttingDown) return null;
        if (export.ClientCount > 0)
        {
            if (!hard) throw new DaemonException($"export '{id}' still in use");
            _ = export.BeginShutdown(disconnectClients: false);
            return () => RunExclusiveDeletionAsync(export);
        }
        await FinishDeletionAsync(export, disconnectClients: false).ConfigureAwait(false);
        return null;
    }

    private async Task RunExclusiveDeletionAsync(BlockExport export)
    {
        await _control.WaitAsync().ConfigureAwait(false);
        try
        {
            if (_exports.Contains(export)) await FinishDeletionAsync(export, disconnectClients: true).ConfigureAwait(false);
        }
        finally
        {
            _control.Release();
        }
    }

    /// <summary>
    /// Deletes every export, each with its BLOCK_EXPORT_DELETED event, in QEMU's order
    /// (blk_exp_close_all): all are asked to shut down, oldest first; one without clients goes
    /// at once, one with clients once they are disconnected (their requests answered first).
    /// With <paramref name="type"/>, only exports of that type (nbd-server-stop's blk_exp_close_all_type).
    /// </summary>
    public async Task DeleteAllExportsAsync(string? type = null)
    {
        var waiting = new List<(BlockExport Export, Task NoClients)>();
        foreach (var export in _exports.Where(e => type is null || e.Type == type).ToArray())
        {
            var noClients = export.BeginShutdown(disconnectClients: true);
            if (noClients.IsCompleted) await FinishDeletionAsync(export, disconnectClients: false).ConfigureAwait(false);
            else waiting.Add((export, noClients));
        }
        while (waiting.Count > 0)
        {
            var done = await Task.WhenAny(waiting.Select(w => w.NoClients)).ConfigureAwait(false);
            int i = waiting.FindIndex(w => w.NoClients == done);
            var export = waiting[i].Export;
            waiting.RemoveAt(i);
            await FinishDeletionAsync(export, disconnectClients: false).ConfigureAwait(false);
        }
    }

    private async Task FinishDeletionAsync(BlockExport export, bool disconnectClients)
    {
        await export.BeginShutdown(disconnectClients).ConfigureAwait(false);
        if (export is NbdExport nbd) _nbd?.RemoveExport(nbd);
        _exports.Remove(export);
        _exportIds.Remove(export.Id);
        await FlushQuietlyAsync(export.Node).ConfigureAwait(false);
        await export.Image.DisposeAsync().ConfigureAwait(false);
        Emit("BLOCK_EXPORT_DELETED", Dict(("id", Str(export.Id))));
    }

    // ------------------------------------------------------------------ monitors and events

    /// <summary><c>--chardev socket,id=ID,path=P,server=on,wait=off</c>: a listening socket for a monitor.</summary>
    public void AddChardev(string id, ListenAddress address)
    {
        if (_chardevs.ContainsKey(id)) throw new DaemonException($"attempt to add duplicate property '{id}' to object (type 'container')");
        _chardevs[id] = SocketListener.Listen(address);
    }

    /// <summary><c>--monitor chardev=ID</c>: serves QMP on the chardev's socket.</summary>
    public void AddMonitor(string chardevId)
    {
        if (!_chardevs.TryGetValue(chardevId, out var listener)) throw new DaemonException($"chardev \"{chardevId}\" not found");
        if (_monitors.Any(m => m.Listener == listener)) throw new DaemonException($"Chardev '{chardevId}' is busy");
        var monitor = new QmpServer(listener, this);
        _monitors.Add(monitor);
        AcceptClients(monitor.Start);
    }

    /// <summary>Sends an event to every QMP client past capabilities negotiation.</summary>
    public void Emit(string name, OptionDict data)
    {
        foreach (var m in _monitors) m.Broadcast(name, data);
    }

    /// <summary>The QMP <c>quit</c> command.</summary>
    public void RequestQuit() => _quit.TrySetResult();

    // ------------------------------------------------------------------ queries

    /// <summary>query-block-exports: newest first, keys as QEMU inserts them.</summary>
    public OptionList QueryBlockExports() => List(Enumerable.Reverse(_exports).Select(e => (OptionValue)Dict(
        ("id", Str(e.Id)), ("type", Str(e.Type)), ("node-name", Str(e.Node.NodeName)), ("shutting-down", Bool(e.ShuttingDown)))));

    /// <summary>query-named-block-nodes: a BlockDeviceInfo per node, newest first.</summary>
    public OptionList QueryNamedBlockNodes(bool flat = false) => List(Graph.NodesNewestFirst.Select(n => (OptionValue)BlockDeviceInfo(n, flat)));

    /// <summary>
    /// bdrv_block_device_info: unless <paramref name="flat"/>, the image info nests the
    /// backing chain's (<c>backing-image</c>) and <c>backing_file_depth</c> counts it.
    /// </summary>
    private static OptionDict BlockDeviceInfo(BlockNode node, bool flat)
    {
        var image = ImageInfoDict(node);
        int depth = 0;
        if (!flat)
        {
            var outer = image;
            for (var below = node.Child("backing")?.Node; below is not null; below = below.Child("backing")?.Node)
            {
                depth++;
                var inner = ImageInfoDict(below);
                SetBackingImage(outer, inner);
                outer = inner;
            }
        }
        var result = Dict(("file", Str(node.Filename)), ("node-name", Str(node.NodeName)), ("ro", Bool(node.IsReadOnly)),
            ("active", Bool(!node.IsInactive)), ("drv", Str(node.DriverName)));
        if (node.Child("backing") is { } backing) result.Set("backing_file", Str(backing.Node.Filename));
        result.Set("backing_file_depth", Int(depth));
        result.Set("encrypted", Bool(false));
        result.Set("detect_zeroes", Str(node.DetectZeroes switch
        {
            DetectZeroes.On => "on",
            DetectZeroes.Unmap => "unmap",
            _ => "off",
        }));
        foreach (var key in new[] { "bps", "bps_rd", "bps_wr", "iops", "iops_rd", "iops_wr" }) result.Set(key, Int(0));
        result.Set("image", image);
        result.Set("cache", Dict(("writeback", Bool(true)), ("direct", Bool(false)), ("no-flush", Bool(false))));
        result.Set("write_threshold", Int(0));
        if (ClusterLockInfo(node) is { } clusterLock) result.Set("x-vdisk-cluster-lock", clusterLock);
        return result;
    }

    /// <summary>A node's ImageInfo as qemu-img info reports it, as a QMP value.</summary>
    private static OptionDict ImageInfoDict(BlockNode node) => (OptionDict)ToQmp(ImageInfo.Collect(node).ToJsonObject());

    /// <summary>
    /// Adds <c>backing-image</c> where ImageInfo's QAPI order puts it, just before
    /// <c>format-specific</c> (members of one QDict bucket are listed newest first).
    /// </summary>
    private static void SetBackingImage(OptionDict image, OptionDict backing)
    {
        var formatSpecific = image["format-specific"];
        image.Remove("format-specific");
        image.Set("backing-image", backing);
        if (formatSpecific is not null) image.Set("format-specific", formatSpecific);
    }

    private static OptionValue ToQmp(object? value) => value switch
    {
        Vdisk.Output.QemuJsonObject o => Dict(o.Members.Select(m => (m.Key, ToQmp(m.Value))).ToArray()),
        string text => Str(text),
        bool b => Bool(b),
        long or int or uint or ulong => Int(Convert.ToInt64(value, System.Globalization.CultureInfo.InvariantCulture)),
        System.Collections.IEnumerable items => List(items.Cast<object?>().Select(ToQmp)),
        _ => Str(Convert.ToString(value, System.Globalization.CultureInfo.InvariantCulture) ?? ""),
    };

    // ------------------------------------------------------------------ shutdown

    /// <summary>
    /// Stops cleanly (SIGTERM, SIGINT, quit): no new connections or commands, requests in
    /// flight finish and answer, images are flushed, locks released, sockets removed.
    /// </summary>
    public async Task ShutdownAsync()
    {
        await _control.WaitAsync().ConfigureAwait(false);
        try
        {
            if (_shutDown) return;
            _shutDown = true;
            Locking.Cluster.ClusterLocks.SessionFenced -= OnSessionFenced;
            // As qemu-storage-daemon exits: every export goes with its event, which the
            // monitors still send before they close.
            await DeleteAllExportsAsync().ConfigureAwait(false);
            if (_nbd is not null) await _nbd.StopAsync().ConfigureAwait(false);
            foreach (var node in Graph.Nodes.Values.Where(n => !n.IsInactive && !n.IsReadOnly).ToArray())
                await FlushQuietlyAsync(node).ConfigureAwait(false);
            await Graph.CloseAllAsync().ConfigureAwait(false);
            foreach (var m in _monitors) await m.StopAsync().ConfigureAwait(false);
            foreach (var l in _chardevs.Values) l.Dispose();
        }
        finally
        {
            _control.Release();
        }
    }

    /// <inheritdoc />
    public async ValueTask DisposeAsync() => await ShutdownAsync().ConfigureAwait(false);
}
