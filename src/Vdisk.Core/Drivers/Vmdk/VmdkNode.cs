using System.Buffers.Binary;
using Vdisk.Graph;
using Vdisk.Native;
using Vdisk.Options;
using Vdisk.Permissions;

namespace Vdisk.Drivers.Vmdk;

/// <summary>
/// The vmdk format node (QEMU's block/vmdk.c): a descriptor (a text file, or embedded in a
/// monolithic sparse file) and extents, each extent a file child with its own lock bytes. The
/// descriptor file is the "file" child (METADATA, and DATA too when it is also the only sparse
/// extent); further extent files are children "extents.N", DATA for flat extents and
/// DATA|METADATA for sparse ones, so the default permission rules give each file QEMU's bytes.
/// </summary>
public sealed partial class VmdkNode : BlockNode, IImageInfoSource
{
    private BdrvChild _fileChild;
    private BdrvChild? _backingChild;
    private readonly List<VmdkExtent> _extents = new();
    private readonly SemaphoreSlim _lock = new(1, 1);
    private readonly OpenFlags _openFlags;
    private bool _cidUpdated;
    private bool _cidChecked;
    private bool _closed;

    private VmdkNode(string nodeName, NodeFlags flags, OpenFlags openFlags, BlockNode file)
        : base(nodeName, flags, file.Filename)
    {
        _openFlags = openFlags;
        _fileChild = AttachChild("file", file, ChildRole.Image);
    }

    /// <inheritdoc />
    public override string DriverName => "vmdk";

    /// <inheritdoc />
    public override bool IsProtocol => false;

    /// <inheritdoc />
    public override IChildPermissionRule PermissionRule => DefaultChildPermissionRule.Instance;

    /// <summary>The descriptor file (the whole image for monolithic sparse and stream-optimized ones).</summary>
    public BlockNode File => _fileChild.Node;

    /// <summary>The backing node, or null.</summary>
    public BlockNode? Backing => _backingChild?.Node;

    /// <summary>createType: monolithicSparse, streamOptimized, monolithicFlat, twoGbMaxExtentSparse, ...</summary>
    public string CreateType { get; private set; } = "";

    /// <summary>The content ID read at open (QEMU does not refresh it after its own writes change it).</summary>
    public uint Cid { get; private set; }

    /// <summary>The parent's content ID this image was made against (0xffffffff without a parent).</summary>
    public uint ParentCid { get; private set; }

    /// <summary>parentFileNameHint, or null.</summary>
    public string? BackingFileHint { get; private set; }

    private string? _fullBackingFilename;

    /// <summary>
    /// The backing file name as given to the open, or the hint resolved as bdrv_dirname does
    /// (null where the node has no directory, as over quorum).
    /// </summary>
    public override string? FullBackingFilename => _fullBackingFilename ?? (BackingFileHint is null ? null : BackingPath.TryResolve(this, BackingFileHint));

    /// <summary>Where the descriptor starts in <see cref="File"/>: 0x200 for sparse files, 0 for descriptor files.</summary>
    private long _descriptorOffset;

    private long _totalSectors;

    /// <inheritdoc />
    public override long Length => _totalSectors * 512;

    /// <summary>The extents, in guest order.</summary>
    internal IReadOnlyList<VmdkExtent> Extents => _extents;


    /// <summary>
    /// vmdk_co_get_info's cluster size: the grain size when every extent has the same kind and
    /// grain size and the first is sparse; null otherwise.
    /// </summary>
    public long? ClusterSize
    {
        get
        {
            if (_extents.Count == 0) return null;
            var first = _extents[0];
            foreach (var e in _extents.Skip(1))
                if (e.IsFlat != first.IsFlat || e.IsCompressed != first.IsCompressed || (!e.IsFlat && e.GrainSectors != first.GrainSectors)) return null;
            return first.IsFlat ? null : first.GrainBytes;
        }
    }

    /// <summary>
    /// vmdk_open: reads the file's start; a VMDK3/VMDK4 magic makes it a sparse extent (and
    /// the image), anything else a descriptor whose extents are opened as children. Then the
    /// parent hint and the two CIDs.
    /// </summary>
    internal static async Task<VmdkNode> OpenAsync(NodeOpenContext context, BlockNode file, OptionDict? extentOptions, CancellationToken ct = default)
    {
        var node = new VmdkNode(context.NodeName, context.Flags, context.OpenFlags, file);
        var buf = await ReadDescriptorAsync(file, 0, ct).ConfigureAwait(false);
        uint magic = BinaryPrimitives.ReadUInt32BigEndian(buf);
        if (magic is VmdkSparseHeader.Vmdk3Magic or VmdkSparseHeader.Vmdk4Magic)
        {
            await node.OpenSparseAsync(context, node._fileChild, buf, extentOptions, ct).ConfigureAwait(false);
            node._descriptorOffset = 0x200;
        }
        else
        {
            // A descriptor file holds no guest data (vmdk_open drops DATA from the file's role).
            node.DetachChild(node._fileChild);
            node._fileChild = node.AttachChild("file", file, ChildRole.Metadata | ChildRole.Primary);
            await node.OpenDescriptorAsync(context, buf, extentOptions, ct).ConfigureAwait(false);
        }

        var area = await node.ReadDescriptorAreaAsync(ct).ConfigureAwait(false);
        string desc = VmdkDescriptor.CString(area);
        try
        {
            node.BackingFileHint = VmdkDescriptor.ReadParentHint(desc);
        }
        catch (FormatException)
        {
            throw node.InvalidArgument();
        }
        node.Cid = VmdkDescriptor.ReadCid(desc, parent: false) ?? throw node.InvalidArgument();
        node.ParentCid = VmdkDescriptor.ReadCid(desc, parent: true) ?? throw node.InvalidArgument();
        return node;
    }

    /// <summary>The error bdrv_open_driver makes of a driver failure without a message.</summary>
    private NativeIOException InvalidArgument() =>
        new(Errno.EINVAL, $"Could not open '{Filename}': {NativeIOException.Describe(Errno.EINVAL)}");

    /// <summary>
    /// vmdk_read_desc: up to 1 MiB of <paramref name="file"/> from <paramref name="offset"/>,
    /// zero-padded as reads past the end are, plus a terminating NUL.
    /// </summary>
    private static async ValueTask<byte[]> ReadDescriptorAsync(BlockNode file, long offset, CancellationToken ct)
    {
        long size = Math.Min(file.Length, VmdkDescriptor.MaxDescriptorFileBytes);
        var buf = new byte[Math.Max(size + 1, 4)];
        try
        {
            if (size > 0) await file.ReadAsync(offset, buf.AsMemory(0, (int)size), ct).ConfigureAwait(false);
        }
        catch (NativeIOException e)
        {
            throw new NativeIOException(e.Errno, "Could not read from file: " + NativeIOException.Describe(e.Errno));
        }
        return buf;
    }

    /// <summary>The DESC_SIZE area at the descriptor's offset (what the CID functions read).</summary>
    internal async ValueTask<byte[]> ReadDescriptorAreaAsync(CancellationToken ct)
    {
        var area = new byte[VmdkDescriptor.DescriptorAreaSize];
        long available = Math.Min(area.Length, Math.Max(0, File.Length - _descriptorOffset));
        if (available > 0) await File.ReadAsync(_descriptorOffset, area.AsMemory(0, (int)available), ct).ConfigureAwait(false);
        area[^1] = 0;
        return area;
    }

    /// <summary>vmdk_open_sparse: a COWD or KDMV extent in <paramref name="file"/>.</summary>
    private async ValueTask OpenSparseAsync(NodeOpenContext context, BdrvChild file, byte[] buf, OptionDict? extentOptions, CancellationToken ct, int depth = 0)
    {
        uint magic = BinaryPrimitives.ReadUInt32BigEndian(buf);
        switch (magic)
        {
            case VmdkSparseHeader.Vmdk3Magic:
                await OpenCowdAsync(file, ct).ConfigureAwait(false);
                return;
            case VmdkSparseHeader.Vmdk4Magic:
                await OpenVmdk4Async(context, file, extentOptions, ct, depth).ConfigureAwait(false);
                return;
            default:
                throw new VmdkFormatException("Image not in VMDK format");
        }
    }

    private static async ValueTask<byte[]> ReadHeaderAsync(BdrvChild file, int length, CancellationToken ct)
    {
        var header = new byte[length];
        try
        {
            await file.Node.ReadAsync(0, header, ct).ConfigureAwait(false);
        }
        catch (NativeIOException e)
        {
            throw new NativeIOException(e.Errno, $"Could not read header from file '{file.Node.Filename}': {NativeIOException.Describe(e.Errno)}");
        }
        return header;
    }

    /// <summary>vmdk_open_vmfs_sparse: an ESX sparse (COWD) extent with 4096-entry grain tables.</summary>
    private async ValueTask OpenCowdAsync(BdrvChild file, CancellationToken ct)
    {
        var h = VmdkCowdHeader.Parse(await ReadHeaderAsync(file, 44, ct).ConfigureAwait(false));
        var extent = AddSparseExtent(file, h.DiskSectors, (long)h.DirectoryOffset << 9, 0, h.DirectorySize,
            VmdkCowdHeader.GrainTableEntries, h.Granularity, compressed: false, markers: false, zeroGrain: false, version: 0);
        await InitTablesAsync(extent, ct).ConfigureAwait(false);
    }

    /// <summary>vmdk_open_vmdk4: a hosted sparse extent, with the footer's header for streams that keep it at the end.</summary>
    private async ValueTask OpenVmdk4Async(NodeOpenContext context, BdrvChild file, OptionDict? extentOptions, CancellationToken ct, int depth)
    {
        var h = VmdkSparseHeader.Parse(await ReadHeaderAsync(file, VmdkSparseHeader.Size, ct).ConfigureAwait(false));
        if (h.Capacity == 0 && h.DescriptorOffset != 0)
        {
            // A sparse file that only embeds a descriptor naming other extents.
            if (depth > 8) throw new VmdkFormatException("invalid VMDK image descriptor");
            var embedded = await ReadDescriptorAsync(file.Node, (long)(h.DescriptorOffset << 9), ct).ConfigureAwait(false);
            await OpenDescriptorAsync(context, embedded, extentOptions, ct, depth + 1).ConfigureAwait(false);
            return;
        }
        if (CreateType.Length == 0) CreateType = "monolithicSparse";

        if (h.GrainDirectoryOffset == VmdkSparseHeader.GrainDirectoryAtEnd)
        {
            // The footer (a copy of the header with the real directory offset) sits between a
            // footer marker and the end-of-stream marker, in the last three sectors.
            var footer = new byte[1536];
            long footerAt = file.Node.Length - 1536;
            try
            {
                if (footerAt < 0) throw Error(Errno.EIO);
                await file.Node.ReadAsync(footerAt, footer, ct).ConfigureAwait(false);
            }
            catch (NativeIOException e)
            {
                throw new NativeIOException(e.Errno, "Failed to read footer: " + NativeIOException.Describe(e.Errno));
            }
            var f = footer.AsSpan();
            if (BinaryPrimitives.ReadUInt32BigEndian(f[512..]) != VmdkSparseHeader.Vmdk4Magic
                || BinaryPrimitives.ReadUInt32LittleEndian(f[8..]) != 0
                || BinaryPrimitives.ReadUInt32LittleEndian(f[12..]) != VmdkMarker.Footer
                || BinaryPrimitives.ReadUInt64LittleEndian(f[1024..]) != 0
                || BinaryPrimitives.ReadUInt32LittleEndian(f[1032..]) != 0
                || BinaryPrimitives.ReadUInt32LittleEndian(f[1036..]) != VmdkMarker.EndOfStream)
            {
                throw new VmdkFormatException("Invalid footer");
            }
            h = VmdkSparseHeader.Parse(f.Slice(512, 512));
        }

        bool compressed = h.IsCompressed;
        if (h.Version > 3) throw new NativeIOException(Errno.ENOTSUP, $"Unsupported VMDK version {h.Version}");
        if (h.Version == 3 && !IsReadOnly && !compressed)
        {
            // Version 3 adds changed block tracking, which vdisk (like QEMU) would not maintain.
            throw new VmdkFormatException("VMDK version 3 must be read only");
        }
        if (h.GrainTableEntries > 512) throw new VmdkFormatException("L2 table size too big");
        uint entrySectors = unchecked((uint)(h.GrainTableEntries * h.Granularity));
        if (entrySectors == 0) throw new VmdkFormatException("L1 entry size is invalid");
        uint l1Size = unchecked((uint)((h.Capacity + entrySectors - 1) / entrySectors));
        long backup = (h.Flags & VmdkSparseHeader.FlagRedundantGrainDirectory) != 0 ? unchecked((long)(h.RedundantGrainDirectoryOffset << 9)) : 0;
        if ((ulong)(file.Node.Length / 512) < h.GrainOffset)
            throw new VmdkFormatException($"File truncated, expecting at least {unchecked((long)(h.GrainOffset * 512))} bytes");
        var extent = AddSparseExtent(file, unchecked((long)h.Capacity), unchecked((long)(h.GrainDirectoryOffset << 9)), backup, l1Size,
            (int)h.GrainTableEntries, h.Granularity, compressed, (h.Flags & VmdkSparseHeader.FlagMarkers) != 0,
            (h.Flags & VmdkSparseHeader.FlagZeroGrain) != 0, (int)h.Version);
        if (compressed) CreateType = "streamOptimized";
        await InitTablesAsync(extent, ct).ConfigureAwait(false);
    }

    /// <summary>vmdk_add_extent for a sparse extent: QEMU's limits, then the extent appended after the others.</summary>
    private VmdkExtent AddSparseExtent(BdrvChild file, long sectors, long directoryOffset, long backupOffset, uint directoryEntries,
        int tableEntries, ulong grainSectors, bool compressed, bool markers, bool zeroGrain, int version)
    {
        if (grainSectors > 0x200000) throw new NativeIOException(Errno.EFBIG, "Invalid granularity, image may be corrupt");
        if (directoryEntries > 32 * 1024 * 1024) throw new NativeIOException(Errno.EFBIG, "L1 size too big");
        // QEMU divides by these unchecked; a zero would crash it, so vdisk refuses the image instead.
        if (grainSectors == 0 || tableEntries == 0) throw new VmdkFormatException("Invalid granularity, image may be corrupt");
        long fileSectors = file.Node.Length / 512;
        long g = (long)grainSectors;
        var extent = new VmdkExtent(file, flat: false, sectors, _totalSectors)
        {
            IsCompressed = compressed,
            HasMarkers = markers,
            HasZeroGrain = zeroGrain,
            Version = version,
            DirectoryOffset = directoryOffset,
            BackupDirectoryOffset = backupOffset,
            TableEntries = tableEntries,
            GrainSectors = g,
            // ROUND_UP(nb_sectors, cluster_sectors) as QEMU's mask arithmetic computes it.
            NextGrainSector = (fileSectors + g - 1) & -g,
            Directory = new uint[directoryEntries],
        };
        _extents.Add(extent);
        _totalSectors = extent.EndSector;
        return extent;
    }

    /// <summary>vmdk_init_tables: the grain directory and its redundant copy.</summary>
    private async ValueTask InitTablesAsync(VmdkExtent extent, CancellationToken ct)
    {
        extent.Directory = await ReadDirectoryAsync(extent, extent.DirectoryOffset, "l1 table", ct).ConfigureAwait(false);
        if (extent.BackupDirectoryOffset != 0)
            extent.BackupDirectory = await ReadDirectoryAsync(extent, extent.BackupDirectoryOffset, "l1 backup table", ct).ConfigureAwait(false);
    }

    private static async ValueTask<uint[]> ReadDirectoryAsync(VmdkExtent extent, long offset, string what, CancellationToken ct)
    {
        int entries = extent.Directory.Length;
        var raw = new byte[entries * 4L];
        try
        {
            if (raw.Length > 0) await extent.File.Node.ReadAsync(offset, raw, ct).ConfigureAwait(false);
        }
        catch (Exception e) when (e is NativeIOException or ArgumentOutOfRangeException)
        {
            int errno = (e as NativeIOException)?.Errno ?? Errno.EINVAL;
            throw new NativeIOException(errno, $"Could not read {what} from extent '{extent.File.Node.Filename}': {NativeIOException.Describe(errno)}");
        }
        var table = new uint[entries];
        for (int i = 0; i < entries; i++) table[i] = BinaryPrimitives.ReadUInt32LittleEndian(raw.AsSpan(i * 4));
        return table;
    }

    /// <summary>vmdk_open_desc_file: the create type, then every extent line.</summary>
    private async ValueTask OpenDescriptorAsync(NodeOpenContext context, byte[] buf, OptionDict? extentOptions, CancellationToken ct, int depth = 0)
    {
        string desc = VmdkDescriptor.CString(buf);
        string createType = VmdkDescriptor.FindQuoted(desc, "createType") ?? throw new VmdkFormatException("invalid VMDK image descriptor");
        if (!VmdkDescriptor.DescriptorCreateTypes.Contains(createType))
            throw new NativeIOException(Errno.ENOTSUP, $"Unsupported image type '{createType}'");
        CreateType = createType;
        _descriptorOffset = 0;
        foreach (var line in VmdkDescriptor.ParseExtents(desc))
            await OpenExtentAsync(context, line, extentOptions, ct, depth).ConfigureAwait(false);
    }

    /// <summary>
    /// One extent line: its file opened as child "extents.N" (DATA for flat extents, DATA and
    /// METADATA for sparse ones), with the options given under that name; relative names are
    /// relative to the descriptor's directory (bdrv_dirname).
    /// </summary>
    private async ValueTask OpenExtentAsync(NodeOpenContext context, VmdkExtentLine line, OptionDict? extentOptions, CancellationToken ct, int depth)
    {
        // vmdk_parse_extents: relative names are relative to bdrv_dirname of the descriptor's
        // node, which fails under quorum (and other nodes without a directory).
        string path = line.FileName.StartsWith('/') ? line.FileName
            : DirectoryOf(File.PathBase ?? throw new NativeIOException(Errno.EINVAL,
                $"Cannot use relative paths with VMDK descriptor file '{File.Filename}': Cannot generate a base directory for {File.DirnameDriver} nodes")) + line.FileName;
        string childName = $"extents.{_extents.Count}";
        var options = (extentOptions?[_extents.Count.ToString(System.Globalization.CultureInfo.InvariantCulture)] as OptionDict)?.Clone() ?? new OptionDict();
        extentOptions?.Remove(_extents.Count.ToString(System.Globalization.CultureInfo.InvariantCulture));
        if (!options.Contains("file") && !options.Contains("filename")) options.Set("filename", path);
        context.Options.Dictionary.Set(childName, options);
        var fileNode = context.OpenChild(childName);
        var role = line.IsFlat ? ChildRole.Data : ChildRole.Data | ChildRole.Metadata;
        var child = AttachChild(childName, fileNode, role);
        if (line.IsFlat)
        {
            var extent = new VmdkExtent(child, flat: true, line.Sectors, _totalSectors)
            {
                FlatStartOffset = line.FlatStartSector << 9,
                GrainSectors = line.Sectors,
                Type = line.Type,
            };
            _extents.Add(extent);
            _totalSectors = extent.EndSector;
            return;
        }
        if (line.Type == "SESPARSE") throw new NativeIOException(Errno.ENOTSUP, "vdisk does not support seSparse extents");
        var buf = await ReadDescriptorAsync(fileNode, 0, ct).ConfigureAwait(false);
        int before = _extents.Count;
        await OpenSparseAsync(context, child, buf, extentOptions, ct, depth).ConfigureAwait(false);
        if (_extents.Count > before) _extents[^1].Type = line.Type;
    }

    /// <summary>bdrv_dirname of a file node: its name up to and including the last slash.</summary>
    private static string DirectoryOf(string filename)
    {
        int slash = filename.LastIndexOf('/');
        return slash < 0 ? "" : filename[..(slash + 1)];
    }

    /// <summary>Attaches the backing node (role COW).</summary>
    internal void AttachBacking(BlockNode backing, string? fullName)
    {
        _backingChild = AttachChild("backing", backing, ChildRole.Cow);
        _fullBackingFilename = fullName;
    }

    /// <inheritdoc />
    public override long? AllocatedSize
    {
        get
        {
            long total = File.AllocatedSize ?? 0;
            foreach (var node in _extents.Select(e => e.File.Node).Distinct())
                if (node != File) total += node.AllocatedSize ?? 0;
            return total;
        }
    }

    /// <inheritdoc />
    public ImageInfo GetImageInfo()
    {
        var extents = new List<Output.QemuJsonObject>();
        foreach (var e in _extents)
        {
            var o = new Output.QemuJsonObject()
                .Add("filename", e.File.Node.Filename)
                .Add("format", e.Type ?? "")
                .Add("virtual-size", e.Sectors * 512);
            if (!e.IsFlat) o.Add("cluster-size", e.GrainBytes);
            if (e.IsCompressed) o.Add("compressed", true);
            extents.Add(o);
        }
        return new ImageInfo
        {
            Filename = Filename,
            Format = "vmdk",
            VirtualSize = Length,
            ActualSize = AllocatedSize,
            ClusterSize = ClusterSize,
            BackingFilename = BackingFileHint,
            FullBackingFilename = FullBackingFilename,
            BackingFormat = BackingFileHint is null ? null : "vmdk",
            FormatSpecificType = "vmdk",
            FormatSpecificData =
            [
                new("create-type", CreateType),
                new("cid", (long)Cid),
                new("parent-cid", (long)ParentCid),
                new("extents", extents),
            ],
        };
    }

    /// <inheritdoc />
    protected internal override void OnActivated()
    {
        foreach (var e in _extents) e.DropCache();
    }

    /// <inheritdoc />
    protected internal override async ValueTask CloseAsync()
    {
        if (_closed) return;
        _closed = true;
        if (IsReadOnly || IsInactive) return;
        try
        {
            await FlushAsync().ConfigureAwait(false);
        }
        catch (IOException e)
        {
            Diagnostics.Warn($"Failed to flush the image '{Filename}': {e.Message}");
        }
    }

    /// <inheritdoc />
    public override string ToString() => $"vmdk node '{NodeName}' ({Filename}, {CreateType}, {_extents.Count} extents)";
}
