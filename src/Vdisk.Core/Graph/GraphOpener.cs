using Vdisk.Collections;
using Vdisk.Drivers.Raw;
using Vdisk.Native;
using Vdisk.Options;
using Vdisk.Permissions;

namespace Vdisk.Graph;

/// <summary>
/// Turns an option tree into nodes, bottom-up (protocol first, then formats), with QEMU's
/// inheritance of read-only and force-share to children and its error wording. On failure every
/// node opened so far is closed again.
/// </summary>
public sealed class GraphOpener
{
    private readonly BlockGraph _graph;
    private readonly List<BlockNode> _opened = new();

    /// <summary>Creates an opener adding nodes to <paramref name="graph"/>.</summary>
    public GraphOpener(BlockGraph graph) => _graph = graph;

    /// <summary>The graph the nodes are opened into.</summary>
    internal BlockGraph Graph => _graph;

    /// <summary>Nodes opened so far, children before parents.</summary>
    public ListView<BlockNode> OpenedNodes => new(_opened);

    /// <summary>Opens the top node of an image and everything below it.</summary>
    public BlockNode OpenTop(OptionDict options, OpenFlags flags)
    {
        try
        {
            var inherited = BackendPermissions.NodeFlagsFor(flags);
            // Copy-on-read is the top node's alone: bdrv_inherited_options clears it for children.
            var top = (flags & OpenFlags.Snapshot) != 0
                ? OpenUnderTemporaryOverlay(options, flags)
                : OpenNode(options, inherited, flags & ~OpenFlags.CopyOnRead, probeFormat: true, unmapByDefault: (flags & OpenFlags.Unmap) != 0);
            if ((flags & OpenFlags.CopyOnRead) != 0)
            {
                // bdrv_open_common, once the driver has opened the node.
                if (top.IsReadOnly) throw new OptionException("Can't use copy-on-read on read-only device");
                top.CopyOnRead = true;
            }
            return top;
        }
        catch
        {
            CloseOpenedAsync().AsTask().GetAwaiter().GetResult();
            throw;
        }
    }

    /// <summary>Closes what was opened, newest first (used when a later step fails).</summary>
    public async ValueTask CloseOpenedAsync()
    {
        for (int i = _opened.Count - 1; i >= 0; i--)
        {
            var node = _opened[i];
            foreach (var child in node.Children.ToArray()) node.DetachChild(child);
            _graph.Remove(node);
            await node.CloseAsync().ConfigureAwait(false);
        }
        _opened.Clear();
    }

    /// <summary>
    /// bdrv_open_inherit with BDRV_O_SNAPSHOT and bdrv_append_temp_snapshot: the image opens
    /// read-only (as a backing file would), a qcow2 of its size is created in the temporary
    /// directory, and that overlay, read-write with cache=unsafe, goes on top with the image as
    /// its backing node. Writes land in the overlay, which is gone once the image closes.
    /// </summary>
    private BlockNode OpenUnderTemporaryOverlay(OptionDict options, OpenFlags flags)
    {
        var baseFlags = flags & ~(OpenFlags.Snapshot | OpenFlags.CopyOnRead | OpenFlags.ReadWrite);
        options.Remove("read-only");
        var image = OpenNode(options, BackendPermissions.NodeFlagsFor(baseFlags), baseFlags, probeFormat: true, unmapByDefault: (flags & OpenFlags.Unmap) != 0);

        string overlayPath = Native.TemporaryFile.Create();
        try
        {
            var create = new CreateOptions(overlayPath, "qcow2");
            create.Options.Set("size", image.Length.ToString(System.Globalization.CultureInfo.InvariantCulture));
            ImageCreator.CreateAsync(create).GetAwaiter().GetResult();
            return OpenNode(OverlayOptions(overlayPath, image), BackendPermissions.NodeFlagsFor(flags | OpenFlags.ReadWrite) & ~NodeFlags.ForceShare,
                (flags & ~(OpenFlags.Snapshot | OpenFlags.CopyOnRead)) | OpenFlags.ReadWrite, probeFormat: false, unmapByDefault: (flags & OpenFlags.Unmap) != 0);
        }
        finally
        {
            // As QEMU 7.2 does, the overlay's name goes as soon as it is open (or failed to
            // open): nothing is left behind in the temporary directory, even after a crash.
            Native.LibC.Unlink(overlayPath);
        }
    }

    private static OptionDict OverlayOptions(string overlayPath, BlockNode image)
    {

        var overlay = new OptionDict();
        overlay.Set("driver", "qcow2");
        var file = new OptionDict();
        file.Set("driver", "file");
        file.Set("filename", overlayPath);
        overlay.Set("file", file);
        overlay.Set("backing", image.NodeName);
        var cache = new OptionDict();
        cache.Set("no-flush", "on");
        overlay.Set("cache", cache);
        return overlay;
    }

    /// <summary>The node named <paramref name="name"/> in this graph, or null.</summary>
    public BlockNode? FindNode(string name) => _graph.Find(name);

    internal BlockNode? OpenChild(NodeOpenContext parent, string childName, bool required, bool probeFormat = false) =>
        OpenChild(parent, childName, parent.Options.Take(childName), required, probeFormat);

    /// <summary>Opens a child from its option value (a dictionary of options, or a node name), taken already by the parent.</summary>
    internal BlockNode? OpenChild(NodeOpenContext parent, string childName, OptionValue? value, bool required, bool probeFormat)
    {
        switch (value)
        {
            case null:
            case OptionScalar { Kind: ScalarKind.Null }:
                if (required) throw new OptionException($"A block device must be specified for \"{childName}\"");
                return null;
            case OptionScalar reference:
                return _graph.Find(reference.Text)
                    ?? throw new OptionException($"Cannot find device='{reference.Text}' nor node-name='{reference.Text}'");
            case OptionDict dict:
                var inherited = parent.Flags & (NodeFlags.ReadWrite | NodeFlags.AutoReadOnly | NodeFlags.ForceShare | NodeFlags.NoIo | NodeFlags.Inactive);
                return OpenNode(dict, inherited, parent.ChildOpenFlags, probeFormat: probeFormat, unmapByDefault: true);
            default:
                throw new OptionException($"Invalid parameter type for '{childName}', expected: BlockdevRef");
        }
    }

    /// <summary>
    /// Opens a backing child: always read-only, inheriting force-share. Without a <c>driver</c>
    /// the format is probed, as QEMU does for backing files whose format the overlay does not name.
    /// </summary>
    public BlockNode OpenBacking(NodeOpenContext parent, OptionDict options)
    {
        // QEMU registers a node once its file is open and before its backing file is opened,
        // so query-named-block-nodes lists the backing chain as newer than the overlay.
        parent.GraphSequence ??= _graph.NextSequence();
        var inherited = parent.Flags & (NodeFlags.ForceShare | NodeFlags.Inactive);
        return OpenNode(options, inherited, parent.ChildOpenFlags & ~OpenFlags.ReadWrite, probeFormat: !options.Contains("driver"), unmapByDefault: true);
    }

    // unmapByDefault: discard=unmap unless the options say otherwise. Children defined inside
    // their parent's options get it (QEMU's bdrv_inherited_options: the parent already decides
    // whether to pass discards down), a top node only when opened with OpenFlags.Unmap.
    private BlockNode OpenNode(OptionDict dict, NodeFlags inherited, OpenFlags openFlags, bool probeFormat, bool unmapByDefault)
    {
        var o = new NodeOptions(dict);
        string? driverName = o.TakeString("driver");
        string? nodeName = o.TakeString("node-name");
        if (nodeName is not null && !BlockGraph.IsValidNodeName(nodeName))
            throw new OptionException($"Invalid node-name: '{nodeName}'");
        if (nodeName is not null && _graph.Find(nodeName) is not null)
            throw new OptionException($"Duplicate nodes with node-name='{nodeName}'");

        bool readOnly = o.TakeBool("read-only") ?? (inherited & NodeFlags.ReadWrite) == 0;
        bool forceShare = o.TakeBool("force-share") ?? (inherited & NodeFlags.ForceShare) != 0;
        bool autoReadOnly = o.TakeBool("auto-read-only") ?? (inherited & NodeFlags.AutoReadOnly) != 0;
        bool unmap = TakeChoice(o, "discard", "ignore", "off", "unmap", "on") is { } discard ? discard is "unmap" or "on" : unmapByDefault;
        var detectZeroes = TakeChoice(o, "detect-zeroes", "off", "on", "unmap") switch
        {
            "on" => DetectZeroes.On,
            "unmap" => DetectZeroes.Unmap,
            _ => DetectZeroes.Off,
        };
        if (detectZeroes == DetectZeroes.Unmap && !unmap)
            throw new OptionException("setting detect-zeroes to unmap is not allowed without setting discard operation to unmap");
        bool direct = (openFlags & OpenFlags.NoCache) != 0;
        bool noFlush = (openFlags & OpenFlags.NoFlush) != 0;
        if (o.TakeDict("cache") is { } cache)
        {
            var c = new NodeOptions(cache);
            direct = c.TakeBool("direct") ?? direct;
            noFlush = c.TakeBool("no-flush") ?? noFlush;
            foreach (var key in c.Unused) throw new OptionException($"Parameter 'cache.{key}' is unexpected");
        }
        if (forceShare && !readOnly)
            throw new OptionException("force-share=on can only be used with read-only images");

        var flags = inherited & (NodeFlags.NoIo | NodeFlags.Inactive);
        if (!readOnly) flags |= NodeFlags.ReadWrite;
        if (forceShare) flags |= NodeFlags.ForceShare;
        if (autoReadOnly) flags |= NodeFlags.AutoReadOnly;
        string name = nodeName ?? BlockGraph.GenerateName();

        bool probed = false;
        if (driverName is null)
        {
            if (!probeFormat || !(dict.Contains("file") || dict.Contains("filename")))
            {
                if (!o.Has("filename")) throw new OptionException("Parameter 'driver' is missing");
                driverName = Drivers.File.FileDriver.ProtocolFor((dict["filename"] as OptionScalar)?.Text ?? "");
            }
            else
            {
                // Top node without a format: open the protocol node first, then probe its content.
                if (dict["file"] is null && o.Has("filename"))
                {
                    var fileDict = new OptionDict();
                    fileDict.Set("filename", o.TakeString("filename")!);
                    dict.Set("file", fileDict);
                }
                var fileContext = new NodeOpenContext(this, o, name, flags, openFlags) { CacheDirect = direct, CacheNoFlush = noFlush };
                var protocol = OpenChild(fileContext, "file", required: true)!;
                driverName = ProbeFormat(protocol);
                probed = driverName == "raw";
                if (probed && !readOnly)
                {
                    WarnProbedRaw(protocol.Filename);
                }
                dict.Set("file", protocol.NodeName);
            }
        }

        var driver = BlockDrivers.Find(driverName) ?? throw new OptionException($"Unknown driver '{driverName}'");
        if (!driver.IsProtocol && dict["file"] is null && o.Has("filename"))
        {
            // "driver=raw,filename=x": the filename belongs to an implicit file child.
            var fileDict = new OptionDict();
            fileDict.Set("filename", o.TakeString("filename")!);
            dict.Set("file", fileDict);
        }
        var context = new NodeOpenContext(this, o, name, flags, openFlags) { CacheDirect = direct, CacheNoFlush = noFlush };
        var node = driver.Open(context);
        node.Unmap = unmap;
        node.DetectZeroes = detectZeroes;
        if (node is RawNode raw) raw.ProbedFormat = probed;
        _opened.Add(node);
        _graph.Add(node, context.GraphSequence);
        return node;
    }

    /// <summary>raw_open's warning when the format of a read-write image was probed as raw (three lines, no newline at the end).</summary>
    public static string ProbedRawWarning(string filename) =>
        $"WARNING: Image format was not specified for '{filename}' and probing guessed raw.\n" +
        "         Automatically detecting the format is dangerous for raw images, write operations on block 0 will be restricted.\n" +
        "         Specify the 'raw' format explicitly to remove the restrictions.";

    private static void WarnProbedRaw(string filename) => Diagnostics.Warn("\n" + ProbedRawWarning(filename));

    private static string? TakeChoice(NodeOptions o, string key, params string[] allowed)
    {
        var value = o.TakeString(key);
        if (value is not null && !allowed.Contains(value))
            throw new OptionException($"Parameter '{key}' does not accept value '{value}'");
        return value;
    }

    private static string ProbeFormat(BlockNode protocol)
    {
        var head = new byte[512];
        long length = protocol.Length;
        if (length > 0)
        {
            try
            {
                protocol.ReadAsync(0, head.AsMemory(0, (int)Math.Min(512, length))).AsTask().GetAwaiter().GetResult();
            }
            catch (IOException e)
            {
                throw new NativeIOException(Errno.EIO, $"Could not read image for determining its format: {e.Message}", protocol.Filename);
            }
        }
        return ProbedFormat(head) ?? "raw";
    }

    /// <summary>
    /// bdrv_probe_all over the first 512 bytes (zeroes past the end of a short file): the format
    /// whose signature they carry, or null for raw. A fixed VHD has its footer only at the end,
    /// so QEMU probes it as raw too.
    /// </summary>
    public static string? ProbedFormat(ReadOnlySpan<byte> firstSector)
    {
        if (firstSector.Length >= 4 && System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(firstSector) == Drivers.Qcow2.Qcow2Header.Magic) return "qcow2";
        if (Drivers.Vpc.VpcDriver.Probe(firstSector)) return "vpc";
        if (Drivers.Vhdx.VhdxDriver.Probe(firstSector)) return "vhdx";
        if (Drivers.Vdi.VdiHeader.Probe(firstSector)) return "vdi";
        if (Drivers.Bochs.BochsHeader.Probe(firstSector)) return "bochs";
        if (Drivers.Vmdk.VmdkDescriptor.Probe(firstSector)) return "vmdk";
        if (Crypto.LuksHeader.HasFormat(firstSector)) return "luks";
        return null;
    }

    /// <summary>True when a first sector would make QEMU probe a format other than raw.</summary>
    public static bool LooksLikeOtherFormat(ReadOnlySpan<byte> firstSector) => ProbedFormat(firstSector) is not null;
}
