using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Vdisk.Graph;
using Vdisk.Native;
using Vdisk.Permissions;

namespace Vdisk.Drivers.Qcow2;

/// <summary>
/// The qcow2 format node: guest offsets map through the L1 and L2 tables to host clusters of the
/// file child; unallocated ranges read from the backing child. Metadata changes are serialized
/// by an async lock. A crash can only leak clusters: a raised refcount reaches the disk before
/// the tables that use it, a lowered one after the tables that dropped the reference (QEMU's
/// cache dependencies, see <see cref="_tablesAwaitRefcounts"/>). A freed cluster is free at
/// once, as in QEMU, so the next allocation may take it.
/// </summary>
public sealed partial class Qcow2Node : BlockNode, IImageInfoSource
{
    private readonly BdrvChild _fileChild;
    private BdrvChild? _backingChild;
    private readonly BdrvChild? _dataChild;
    private readonly SemaphoreSlim _lock = new(1, 1);
    private Qcow2Header _header;
    private readonly Qcow2Geometry _g;
    private ulong[] _l1;
    private bool _l1Dirty;
    private readonly Qcow2Cache _l2Cache;
    private readonly Qcow2Refcounts _refcounts;
    private readonly List<PendingFree> _pendingFrees = new();
    private List<Qcow2Snapshot> _snapshots;
    private int _inflight;
    private bool _dataSinceSync;
    private bool _preparedForWrites;
    private bool _markedDirty;
    private bool _closed;
    private readonly OpenFlags _openFlags;

    /// <summary>A release queued while reads are in flight; <c>InDataFile</c>: a discard of data file clusters only.</summary>
    private readonly record struct PendingFree(long Offset, long Length, bool Discard, bool InDataFile = false);

    private Qcow2Node(string nodeName, NodeFlags flags, BlockNode file, Qcow2Header header, ulong[] l1,
        ulong[] refcountTable, List<Qcow2Snapshot> snapshots, OpenFlags openFlags, BlockNode? dataFile)
        : base(nodeName, flags, file.Filename)
    {
        _header = header;
        UseLazyRefcounts = header.LazyRefcounts;
        _g = header.Geometry;
        _l1 = l1;
        _snapshots = snapshots;
        _openFlags = openFlags;
        // With an external data file the image file holds no guest data ("No data here").
        _fileChild = AttachChild("file", file, dataFile is null ? ChildRole.Image : ChildRole.Metadata | ChildRole.Primary);
        if (dataFile is not null) _dataChild = AttachChild("data-file", dataFile, ChildRole.Data);
        int tablesForWholeDisk = (int)Math.Min(int.MaxValue, Math.Max(1, _g.L1EntriesFor((long)header.Size)));
        int maxTables = (int)Math.Min(4096, (32L << 20) >> _g.ClusterBits);
        int l2Capacity = Math.Clamp(tablesForWholeDisk, 16, Math.Max(16, maxTables));
        _l2Cache = new Qcow2Cache(l2Capacity, _g.ClusterSize, ReadL2TableAsync, WriteL2BackAsync);
        long allocatedEnd = _g.SizeToClusters(file.Length);
        _refcounts = new Qcow2Refcounts(file, _g, refcountTable, (long)header.RefcountTableOffset,
            (int)header.RefcountTableClusters, Math.Clamp(l2Capacity / 4, 16, 4096), allocatedEnd, SyncFileAsync)
        {
            TableMoved = WriteRefcountTablePointerAsync,
            CorruptionFound = message => ReportCorruptionAsync(message),
            BeforeIncrease = BeforeRefcountIncreaseAsync,
            BeforeDecrease = BeforeRefcountDecreaseAsync,
            BeforeBlocksWritten = WriteTablesBeforeRefcountsAsync,
            BeforeSearch = IssueHeldDiscardsAsync,
            BeforeBlockWrite = (offset, length) => CheckMetadataOverlapAsync(offset, length, ignore: Qcow2OverlapChecks.RefcountBlock),
        };
    }

    /// <inheritdoc />
    public override string DriverName => "qcow2";

    /// <inheritdoc />
    public override bool IsProtocol => false;

    /// <inheritdoc />
    public override IChildPermissionRule PermissionRule => DefaultChildPermissionRule.Instance;

    /// <summary>The file child's node.</summary>
    public BlockNode File => _fileChild.Node;

    /// <summary>Where guest data clusters live: the data-file child, or the image file itself.</summary>
    public BlockNode DataFile => _dataChild?.Node ?? File;

    /// <summary>
    /// has_data_file: the header's external data file bit (true even when a metadata-only open
    /// left the data file closed). Data clusters then sit at their guest offsets in the data
    /// file and are not counted in the image's refcounts.
    /// </summary>
    public bool HasExternalDataFile => _header.HasDataFile;

    /// <summary>bdrv_sum_allocated_file_size: the image file and the data file.</summary>
    public override long? AllocatedSize => _dataChild is null ? File.AllocatedSize : File.AllocatedSize + DataFile.AllocatedSize;

    /// <summary>The backing node, or null.</summary>
    public BlockNode? Backing => _backingChild?.Node;

    /// <summary>The header as read (and as updated since).</summary>
    public Qcow2Header Header => _header;

    /// <summary>Cluster size and table geometry.</summary>
    public Qcow2Geometry Geometry => _g;

    /// <summary>The internal snapshots.</summary>
    public IReadOnlyList<Qcow2Snapshot> Snapshots => _snapshots;

    /// <summary>The backing file name as given to the open (resolved against the image's directory).</summary>
    public override string? FullBackingFilename => _fullBackingFilename;

    private string? _fullBackingFilename;

    /// <inheritdoc />
    public override long Length => (long)_header.Size;

    /// <inheritdoc />
    public override long ClusterSizeForCopy => _g.ClusterSize;

    /// <summary>True when the header's corrupt bit is set.</summary>
    public bool IsCorrupt => (_header.IncompatibleFeatures & Qcow2Features.IncompatCorrupt) != 0;

    /// <summary>
    /// qcow2_has_zero_init: an image without preallocated L2 tables reads as zeroes; a preallocated
    /// one does only where its file does, and never when encrypted (its clusters decrypt to noise).
    /// </summary>
    public override bool HasZeroInit => _l1.Length == 0 || _l1[0] == 0 || (!IsEncrypted && DataFile.HasZeroInit);

    /// <summary>
    /// Opens the image on <paramref name="file"/>: validates the header and tables like
    /// qcow2_do_open, reads the L1 and refcount tables and the snapshot list, and repairs the
    /// refcounts of a dirty image opened read-write.
    /// </summary>
    public static async Task<Qcow2Node> OpenAsync(string nodeName, NodeFlags flags, OpenFlags openFlags, BlockNode file, CancellationToken cancellationToken = default,
        string? encryptKeySecret = null, string? encryptFormat = null, Func<Qcow2Header, BlockNode?>? openDataFile = null)
    {
        bool check = (openFlags & OpenFlags.Check) != 0;
        bool writable = (flags & NodeFlags.ReadWrite) != 0;
        var header = Qcow2Header.Parse(await ReadHeaderAreaAsync(file, cancellationToken).ConfigureAwait(false));

        ulong unsupported = header.IncompatibleFeatures & ~Qcow2Features.IncompatSupported;
        if (unsupported != 0)
        {
            var names = Qcow2Features.NameTable.Where(f => f.Type == 0 && (unsupported & (1UL << f.Bit)) != 0).Select(f => f.Name);
            throw new Qcow2FormatException("vdisk does not support the qcow2 feature(s): " + string.Join(", ", names));
        }
        if ((header.IncompatibleFeatures & Qcow2Features.IncompatCorrupt) != 0 && writable && !check)
            throw new NativeIOException(Errno.EACCES, "qcow2: Image is corrupt; cannot be opened read/write");

        var g = header.Geometry;
        if (header.RefcountTableClusters == 0 && !check) throw new Qcow2FormatException("Image does not contain a reference count table");
        ValidateTable(g, header.RefcountTableOffset, header.RefcountTableClusters, g.ClusterSize, Qcow2Geometry.MaxRefcountTableBytes, "Reference count table");
        if (!check)
            ValidateTable(g, header.SnapshotsOffset, header.SnapshotCount, 40, 40L * Qcow2Snapshot.MaxSnapshots, "Snapshot table");
        ValidateTable(g, header.L1TableOffset, header.L1Size, 8, Qcow2Geometry.MaxL1Bytes, "Active L1 table");
        long l1Needed = g.L1EntriesFor((long)Math.Min(header.Size, long.MaxValue / 2));
        if (header.Size > long.MaxValue / 2 || l1Needed > int.MaxValue) throw new NativeIOException(Errno.EFBIG, "Image is too big");
        if (header.L1Size < l1Needed) throw new Qcow2FormatException("L1 table is too small");

        var l1 = await ReadTableEntriesAsync(file, (long)header.L1TableOffset, (int)header.L1Size, "Could not read L1 table", cancellationToken).ConfigureAwait(false);
        var refcountTable = await ReadTableEntriesAsync(file, (long)header.RefcountTableOffset,
            (int)(header.RefcountTableClusters * (g.ClusterSize / 8)), "Could not read refcount table", cancellationToken).ConfigureAwait(false);
        var dataFile = openDataFile?.Invoke(header);
        var snapshots = check ? new List<Qcow2Snapshot>() : await ReadSnapshotsAsync(file, header, cancellationToken).ConfigureAwait(false);

        var node = new Qcow2Node(nodeName, flags, file, header, l1, refcountTable, snapshots, openFlags, dataFile);
        await node.SetUpEncryptionAsync(encryptKeySecret, encryptFormat, flags, cancellationToken).ConfigureAwait(false);
        if (!check && writable && (header.IncompatibleFeatures & Qcow2Features.IncompatDirty) != 0)
        {
            try
            {
                // The repair prints what it finds and does, as QEMU's check on open does (its fprintf lines).
                var result = await node.CheckAsync(RepairMode.All, Diagnostics.Report, cancellationToken).ConfigureAwait(false);
                if (result.CheckErrors > 0) throw new NativeIOException(Errno.EIO, "Could not repair dirty image: " + NativeIOException.Describe(Errno.EIO));
            }
            catch (NativeIOException e) when (!e.Message.StartsWith("Could not repair", StringComparison.Ordinal))
            {
                throw new NativeIOException(e.Errno, "Could not repair dirty image: " + e.Message);
            }
            catch (ImageCheckException e)
            {
                throw new NativeIOException(e.Errno, "Could not repair dirty image: " + NativeIOException.Describe(e.Errno));
            }
        }
        // qcow2_do_open: an active read-write open drops autoclear bits from unknown writers.
        ulong unknownAutoclear = header.AutoclearFeatures & ~Qcow2Features.AutoclearKnownToQemu;
        if (writable && (flags & NodeFlags.Inactive) == 0 && header.Version >= 3 && unknownAutoclear != 0)
            await node.WriteAutoclearFeaturesAsync(header.AutoclearFeatures & ~unknownAutoclear, cancellationToken).ConfigureAwait(false);
        // qcow2_do_open loads the bitmaps for check too: a broken directory fails the check's open.
        if ((flags & NodeFlags.Inactive) == 0)
        {
            try
            {
                await node.LoadBitmapsAsync(writable, cancellationToken).ConfigureAwait(false);
            }
            catch
            {
                // The node was never handed out: nothing may be stored on a close.
                node._closed = true;
                throw;
            }
        }
        return node;
    }

    private static async ValueTask ReadHeaderBytesAsync(BlockNode file, long offset, byte[] buffer, CancellationToken ct)
    {
        try
        {
            await file.ReadAsync(offset, buffer, ct).ConfigureAwait(false);
        }
        catch (NativeIOException e)
        {
            throw new NativeIOException(e.Errno, "Could not read qcow2 header: " + NativeIOException.Describe(e.Errno));
        }
    }

    /// <summary>qcow2_validate_table: size limit and a cluster-aligned offset that fits in 63 bits.</summary>
    internal static void ValidateTable(Qcow2Geometry g, ulong offset, ulong entries, long entryLength, long maxBytes, string name)
    {
        if (entries > (ulong)(maxBytes / entryLength)) throw new NativeIOException(Errno.EFBIG, $"{name} too large");
        if ((ulong)long.MaxValue - entries * (ulong)entryLength < offset || (offset & (ulong)(g.ClusterSize - 1)) != 0)
            throw new Qcow2FormatException($"{name} offset invalid");
    }

    /// <summary>
    /// The part of cluster 0 that <see cref="Qcow2Header.Parse"/> reads: its first 4 KiB, which
    /// hold the header, its extensions and the backing file name of every image qemu-img writes,
    /// or the whole cluster when they run further. A one-shot run then does not zero and fault in
    /// a 64 KiB (up to 2 MiB) buffer for a few hundred bytes.
    /// </summary>
    private static async ValueTask<byte[]> ReadHeaderAreaAsync(BlockNode file, CancellationToken ct)
    {
        var prefix = new byte[Qcow2Header.HeaderAreaPrefix];
        await ReadHeaderBytesAsync(file, 0, prefix, ct).ConfigureAwait(false);
        int needed = Qcow2Header.BytesToRead(prefix);
        if (needed <= prefix.Length) return prefix;
        var cluster0 = new byte[needed];
        await ReadHeaderBytesAsync(file, 0, cluster0, ct).ConfigureAwait(false);
        return cluster0;
    }

    /// <summary>
    /// Reads a table of big-endian 64-bit entries straight into the array it is kept in (no
    /// second buffer of its size to zero and fault in), then byte-swaps it in place.
    /// </summary>
    private static async ValueTask<ulong[]> ReadTableEntriesAsync(BlockNode file, long offset, int entries, string what, CancellationToken ct)
    {
        // Uninitialized: the read fills it (a short read throws), and the GC's zeroing of a fresh
        // 64 KiB refcount table was ~4% of `vdisk serve`'s start on a default image.
        var table = GC.AllocateUninitializedArray<ulong>(entries);
        if (entries == 0) return table;
        try
        {
            await file.ReadAsync(offset, new Copy.ArrayByteMemory<ulong>(table).Memory, ct).ConfigureAwait(false);
        }
        catch (NativeIOException e)
        {
            throw new NativeIOException(e.Errno, $"{what}: {NativeIOException.Describe(e.Errno)}");
        }
        if (BitConverter.IsLittleEndian) BinaryPrimitives.ReverseEndianness(table, table);
        return table;
    }

    private static async ValueTask<List<Qcow2Snapshot>> ReadSnapshotsAsync(BlockNode file, Qcow2Header header, CancellationToken ct)
    {
        if (header.SnapshotCount == 0) return new();
        // Entries have variable size: read in growing steps, bounded by QEMU's 64 MiB table limit.
        long size = Math.Max(4096, header.SnapshotCount * 48L);
        const long maxTable = 64L << 20;
        while (true)
        {
            size = Math.Min(size, maxTable);
            var raw = new byte[size];
            await file.ReadAsync((long)header.SnapshotsOffset, raw, ct).ConfigureAwait(false);
            try
            {
                return Qcow2Snapshot.ParseTable(raw, header.SnapshotCount);
            }
            catch (Qcow2FormatException) when (size < maxTable)
            {
                size *= 4;
            }
            catch (Qcow2FormatException e) when (e.Message == "Snapshot table is truncated")
            {
                throw new Qcow2FormatException("Snapshot table is too big");
            }
        }
    }

    /// <summary>Attaches the backing node (role COW).</summary>
    internal void AttachBacking(BlockNode backing, string? fullName)
    {
        _backingChild = AttachChild("backing", backing, ChildRole.Cow);
        _fullBackingFilename = fullName;
    }

    private async ValueTask ReadL2TableAsync(long offset, byte[] buffer)
    {
        await File.DebugEventAsync(BlkdebugEvent.L2Load).ConfigureAwait(false);
        await File.ReadAsync(offset, buffer).ConfigureAwait(false);
    }

    private async ValueTask SyncFileAsync()
    {
        // Data must be durable before the metadata that points at it, wherever it lives.
        if (_dataChild is not null && _dataSinceSync) await DataFile.FlushAsync().ConfigureAwait(false);
        await File.FlushAsync().ConfigureAwait(false);
        _dataSinceSync = false;
    }

    /// <inheritdoc />
    public ImageInfo GetImageInfo()
    {
        var specific = new List<KeyValuePair<string, object>>();
        if (_header.Version == 2)
        {
            specific.Add(new("compat", "0.10"));
            specific.Add(new("compression-type", "zlib"));
            specific.Add(new("refcount-bits", (long)_g.RefcountBits));
        }
        else
        {
            specific.Add(new("compat", "1.1"));
            specific.Add(new("compression-type", _header.CompressionType == Qcow2CompressionType.Zstd ? "zstd" : "zlib"));
            specific.Add(new("lazy-refcounts", _header.LazyRefcounts));
            if (ReadBitmapInfo() is { } bitmaps) specific.Add(new("bitmaps", bitmaps));
            specific.Add(new("refcount-bits", (long)_g.RefcountBits));
            if (_header.DataFile is { } dataFile) specific.Add(new("data-file", dataFile));
            if (_header.HasDataFile) specific.Add(new("data-file-raw", _header.DataFileRaw));
            specific.Add(new("corrupt", IsCorrupt));
            specific.Add(new("extended-l2", false));
        }
        if (EncryptInfo() is { } encrypt) specific.Add(new("encrypt", encrypt));
        return new ImageInfo
        {
            Filename = Filename,
            Format = "qcow2",
            VirtualSize = Length,
            ActualSize = AllocatedSize,
            ClusterSize = _g.ClusterSize,
            Encrypted = IsEncrypted,
            VmStateOffset = VmStateOffset,
            DirtyFlag = (_header.IncompatibleFeatures & Qcow2Features.IncompatDirty) != 0,
            BackingFilename = _header.BackingFile,
            FullBackingFilename = _header.BackingFile is null ? null : FullBackingFilename ?? BackingPath.TryResolve(this, _header.BackingFile),
            BackingFormat = _header.BackingFormat,
            Snapshots = SnapshotInfos(),
            FormatSpecificType = "qcow2",
            FormatSpecificData = specific,
        };
    }

    private List<SnapshotInfo> SnapshotInfos()
    {
        var infos = new List<SnapshotInfo>(_snapshots.Count);
        foreach (var s in _snapshots)
            infos.Add(new SnapshotInfo(s.Id, s.Name, (long)s.VmStateSize, s.DateSeconds, s.DateNanoseconds,
                (long)s.VmClockNanoseconds, s.Icount is ulong ic and not ulong.MaxValue ? (long)ic : null));
        return infos;
    }

    /// <summary>
    /// qcow2_get_bitmap_info_list: name, granularity and flags of each persistent bitmap in the
    /// bitmap directory, or null when the image has none (or they are not consistent: a program
    /// without bitmap support cleared the autoclear bit, and QEMU ignores them then).
    /// </summary>
    private List<Output.QemuJsonObject>? ReadBitmapInfo()
    {
        if (_header.Bitmaps is not { Count: > 0 } bm || (_header.AutoclearFeatures & Qcow2Features.AutoclearBitmaps) == 0) return null;
        if (bm.DirectorySize > 64UL << 20) return null;
        var dir = new byte[bm.DirectorySize];
        try
        {
            // info is synchronous; the directory is small and read once per call.
            File.ReadAsync((long)bm.DirectoryOffset, dir).AsTask().GetAwaiter().GetResult();
        }
        catch (IOException)
        {
            return null;
        }
        var list = new List<Output.QemuJsonObject>();
        int pos = 0;
        for (uint i = 0; i < bm.Count && pos + 24 <= dir.Length; i++)
        {
            uint flags = BinaryPrimitives.ReadUInt32BigEndian(dir.AsSpan(pos + 12));
            int granularityBits = dir[pos + 17];
            int nameSize = BinaryPrimitives.ReadUInt16BigEndian(dir.AsSpan(pos + 18));
            long extra = BinaryPrimitives.ReadUInt32BigEndian(dir.AsSpan(pos + 20));
            long nameAt = pos + 24 + extra;
            if (nameAt + nameSize > dir.Length || granularityBits > 62) return null;
            var names = new List<string>();
            if ((flags & 1) != 0) names.Add("in-use");
            if ((flags & 2) != 0) names.Add("auto");
            list.Add(new Output.QemuJsonObject()
                .Add("name", System.Text.Encoding.UTF8.GetString(dir, (int)nameAt, nameSize))
                .Add("granularity", 1L << granularityBits)
                .Add("flags", names));
            pos = (int)((nameAt + nameSize + 7) & ~7L);
        }
        return list;
    }

    /// <inheritdoc />
    protected internal override async ValueTask CloseAsync()
    {
        if (_closed) return;
        _closed = true;
        // An inactive node has handed the image over (and flushed when it did): leave it alone.
        if (IsReadOnly || IsInactive) return;
        // After a fatal corruption QEMU's node has no driver left: bdrv_close neither flushes
        // nor closes it, so metadata still cached (a refcount raised for a refused allocation)
        // never reaches the file. Only the corrupt bit, written when it was set, does.
        if (_unusable) return;
        try
        {
            await LockQuiescedAsync().ConfigureAwait(false);
            try
            {
                if (_dataChild is not null && _dataSinceSync)
                {
                    try
                    {
                        await DataFile.FlushAsync().ConfigureAwait(false);
                    }
                    catch (IOException)
                    {
                        // bdrv_close flushes the data file as a child and ignores its failure.
                    }
                    _dataSinceSync = false;
                }
                await StoreBitmapsLockedAsync(CancellationToken.None).ConfigureAwait(false);
                await FlushLockedAsync(CancellationToken.None).ConfigureAwait(false);
                if (_markedDirty) await SetIncompatibleFeaturesAsync(_header.IncompatibleFeatures & ~Qcow2Features.IncompatDirty).ConfigureAwait(false);
            }
            finally
            {
                _lock.Release();
            }
        }
        catch (IOException e)
        {
            Diagnostics.Warn($"Failed to flush the image '{Filename}': {e.Message}");
        }
    }
}
