using System.Buffers.Binary;
using Vdisk.Graph;
using Vdisk.Native;
using Vdisk.Options;

namespace Vdisk.Drivers.Qcow2;

public sealed partial class Qcow2Node
{
    /// <inheritdoc />
    public override ValueTask TruncateAsync(long length, CancellationToken cancellationToken = default) =>
        ResizeAsync(length, Preallocation.Off, cancellationToken);

    /// <inheritdoc />
    public override ValueTask TruncateAsync(long length, Preallocation preallocation, CancellationToken cancellationToken = default) =>
        ResizeAsync(length, preallocation, cancellationToken);

    /// <summary>
    /// qcow2_co_truncate: grows the L1 table as needed and rewrites the size field; shrinking
    /// frees every cluster past the new end and trims the file. Growing over a longer backing
    /// file makes the new area read as zeroes.
    /// </summary>
    public async ValueTask ResizeAsync(long length, Preallocation preallocation, CancellationToken cancellationToken = default)
    {
        EnsureWritable();
        if (length < 0) throw new NativeIOException(Errno.EINVAL, "qcow2: Size must be non-negative");
        if ((length & 511) != 0) throw new NativeIOException(Errno.EINVAL, "The new size must be a multiple of 512");
        long oldLength = Length;
        if (_header.SnapshotCount > 0) throw new NativeIOException(Errno.ENOTSUP, "Can't resize an image which has snapshots");
        if (_header.Bitmaps is not null && (_header.AutoclearFeatures & Qcow2Features.AutoclearBitmaps) != 0)
            throw new NativeIOException(Errno.ENOTSUP, "Can't resize an image which has bitmaps");
        await _lock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            await PrepareForWritesLockedAsync().ConfigureAwait(false);
            long l1Needed = _g.L1EntriesFor(length);
            if (length < oldLength)
            {
                long from = _g.ClusterStart(length + _g.ClusterSize - 1);
                await DiscardClustersLockedAsync(from, oldLength, fullDiscard: true).ConfigureAwait(false);
                for (long i = l1Needed; i < _l1.Length; i++)
                {
                    long l2 = await L2TableOffsetAsync(i).ConfigureAwait(false);
                    if (l2 == 0) continue;
                    _l1[i] = 0;
                    _l1Dirty = true;
                    _pendingFrees.Add(new(l2, _g.ClusterSize, true));
                }
                await FlushLockedAsync(cancellationToken).ConfigureAwait(false);
                await WriteSizeAsync(length).ConfigureAwait(false);
                await TrimFileLockedAsync().ConfigureAwait(false);
                return;
            }
            if (l1Needed > _l1.Length) await GrowL1LockedAsync(l1Needed).ConfigureAwait(false);
            await WriteSizeAsync(length).ConfigureAwait(false);
        }
        finally
        {
            _lock.Release();
        }
        if (length > oldLength && Backing is { } backing && backing.Length > oldLength)
            await WriteZeroesAsync(oldLength, length - oldLength, ZeroFlags.None, cancellationToken).ConfigureAwait(false);
        if (preallocation != Preallocation.Off && length > oldLength)
            await PreallocateAsync(_g.ClusterStart(oldLength), length, preallocation, cancellationToken).ConfigureAwait(false);
    }

    private async ValueTask WriteSizeAsync(long length)
    {
        var buf = new byte[8];
        BinaryPrimitives.WriteUInt64BigEndian(buf, (ulong)length);
        await File.WriteAsync(Qcow2Header.SizeOffset, buf).ConfigureAwait(false);
        await SyncFileAsync().ConfigureAwait(false);
        _header.Size = (ulong)length;
    }

    /// <summary>qcow2_grow_l1_table: a new table is written and synced before the header points at it; the old one is freed after.</summary>
    private async ValueTask GrowL1LockedAsync(long entries)
    {
        if (entries * 8 > Qcow2Geometry.MaxL1Bytes) throw new NativeIOException(Errno.EFBIG, "Failed to grow the L1 table: File too large");
        await FlushLockedAsync(CancellationToken.None).ConfigureAwait(false);
        long bytes = entries * 8;
        long newOffset = await _refcounts.AllocateAsync(_g.SizeToClusters(bytes)).ConfigureAwait(false);
        var newL1 = new ulong[entries];
        Array.Copy(_l1, newL1, _l1.Length);
        var raw = new byte[bytes];
        for (long i = 0; i < entries; i++) BinaryPrimitives.WriteUInt64BigEndian(raw.AsSpan((int)(i * 8)), newL1[i]);
        await _refcounts.WriteBackAsync().ConfigureAwait(false);
        await File.WriteAsync(newOffset, raw).ConfigureAwait(false);
        await SyncFileAsync().ConfigureAwait(false);
        var header = new byte[12];
        BinaryPrimitives.WriteUInt32BigEndian(header, (uint)entries);
        BinaryPrimitives.WriteUInt64BigEndian(header.AsSpan(4), (ulong)newOffset);
        await File.WriteAsync(Qcow2Header.L1SizeOffset, header).ConfigureAwait(false);
        await SyncFileAsync().ConfigureAwait(false);
        long oldOffset = (long)_header.L1TableOffset;
        long oldBytes = _l1.Length * 8L;
        _l1 = newL1;
        _header.L1Size = (uint)entries;
        _header.L1TableOffset = (ulong)newOffset;
        if (oldBytes > 0 && oldOffset != 0) await _refcounts.ChangeAsync(oldOffset, oldBytes, -1).ConfigureAwait(false);
    }

    /// <summary>Cuts the file after the last cluster still in use.</summary>
    private async ValueTask TrimFileLockedAsync()
    {
        long last = _refcounts.AllocatedEnd - 1;
        while (last > 0 && await _refcounts.GetAsync(last).ConfigureAwait(false) == 0) last--;
        long end = (last + 1) << _g.ClusterBits;
        if (end < File.Length) await File.TruncateAsync(end).ConfigureAwait(false);
    }

    /// <summary>
    /// preallocate_co: every guest cluster in [start, end) gets a host cluster (contiguous runs,
    /// zero-flagged only when the image has a backing file); falloc and full also reserve or
    /// zero the file blocks.
    /// </summary>
    public async ValueTask PreallocateAsync(long start, long end, Preallocation mode, CancellationToken ct = default)
    {
        int cs = _g.ClusterSize;
        long fileEnd = 0;
        await _lock.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            long pos = start;
            while (pos < end)
            {
                long l1Index = _g.L1Index(pos);
                var table = await GetL2ForWriteLockedAsync(l1Index).ConfigureAwait(false);
                long tableEnd = Math.Min(end, (l1Index + 1) * _g.BytesPerL2Table);
                int first = _g.L2Index(pos);
                int count = (int)_g.SizeToClusters(tableEnd - pos);
                long host = await _refcounts.AllocateAsync(count).ConfigureAwait(false);
                table = await _l2Cache.GetAsync(table.Offset).ConfigureAwait(false);
                for (int i = 0; i < count; i++)
                {
                    var old = EntryAt(table, first + i);
                    if (old.Kind != Qcow2ClusterKind.Unallocated && old.Kind != Qcow2ClusterKind.ZeroPlain) continue;
                    SetEntry(table, first + i, L2Entry.Allocated(host + (long)i * cs));
                }
                fileEnd = Math.Max(fileEnd, host + (long)count * cs);
                pos = tableEnd;
            }
            await FlushLockedAsync(ct).ConfigureAwait(false);
            if (File.Length < fileEnd)
            {
                if (mode == Preallocation.Full)
                    await File.WriteZeroesAsync(File.Length, fileEnd - File.Length, ZeroFlags.None, ct).ConfigureAwait(false);
                else if (mode == Preallocation.Falloc && File is Drivers.File.FileNode f)
                {
                    long from = File.Length;
                    if (!f.Preallocate(from, fileEnd - from)) await File.WriteZeroesAsync(from, fileEnd - from, ZeroFlags.None, ct).ConfigureAwait(false);
                }
                else
                    await File.TruncateAsync(fileEnd, ct).ConfigureAwait(false);
            }
        }
        finally
        {
            _lock.Release();
        }
    }

    /// <inheritdoc />
    public override bool SupportsCompressedWrites => true;

    /// <summary>
    /// qcow2_co_pwritev_compressed_part: whole guest clusters (a short one only at the end of the
    /// image), each compressed on its own; data that does not shrink is written normally, as
    /// QEMU does.
    /// </summary>
    public override async ValueTask WriteCompressedAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken cancellationToken = default)
    {
        int cs = _g.ClusterSize;
        if (_g.OffsetInCluster(offset) != 0 || (data.Length % cs != 0 && offset + data.Length != Length))
            throw new NativeIOException(Errno.EINVAL, NativeIOException.Describe(Errno.EINVAL));
        for (int pos = 0; pos < data.Length; pos += cs)
        {
            var cluster = data.Slice(pos, Math.Min(cs, data.Length - pos));
            CheckCompressedWrite(offset + pos, cluster.Length);
            await WriteCompressedAsync(offset + pos, cluster, CompressCluster(cluster.Span), cancellationToken).ConfigureAwait(false);
        }
    }

    private void CheckCompressedWrite(long offset, int length)
    {
        EnsureWritable();
        if (_g.OffsetInCluster(offset) != 0 || (length != _g.ClusterSize && offset + length != Length))
            throw new NativeIOException(Errno.EINVAL, NativeIOException.Describe(Errno.EINVAL), Filename);
    }

    /// <summary>
    /// Compresses one guest cluster (a short last one is padded with zeroes) as
    /// <see cref="WriteCompressedAsync(long, ReadOnlyMemory{byte}, CancellationToken)"/> does;
    /// null when it does not shrink. Thread-safe and lock-free, so a copier can compress
    /// clusters in parallel and write them in order afterwards.
    /// </summary>
    public byte[]? CompressCluster(ReadOnlySpan<byte> cluster)
    {
        int cs = _g.ClusterSize;
        if (cluster.Length > cs) throw new ArgumentException("More than one cluster", nameof(cluster));
        if (cluster.Length == cs) return Qcow2Compression.Compress(_header.CompressionType, cluster);
        var full = new byte[cs];
        cluster.CopyTo(full);
        return Qcow2Compression.Compress(_header.CompressionType, full);
    }

    /// <summary>
    /// Writes a cluster that <see cref="CompressCluster"/> compressed to <paramref name="compressed"/>
    /// (null: it is written uncompressed).
    /// </summary>
    public async ValueTask WriteCompressedAsync(long offset, ReadOnlyMemory<byte> cluster, byte[]? compressed, CancellationToken ct = default)
    {
        CheckCompressedWrite(offset, cluster.Length);
        if (compressed is null)
        {
            await WriteAsync(offset, cluster, WriteFlags.None, ct).ConfigureAwait(false);
            return;
        }
        await _lock.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            await PrepareForWritesLockedAsync().ConfigureAwait(false);
            long l1Index = _g.L1Index(offset);
            var table = await GetL2ForWriteLockedAsync(l1Index).ConfigureAwait(false);
            long host = await _refcounts.AllocateBytesAsync(compressed.Length).ConfigureAwait(false);
            await CheckMetadataOverlapAsync(host, compressed.Length).ConfigureAwait(false);
            await File.WriteAsync(host, compressed, WriteFlags.None, ct).ConfigureAwait(false);
            _dataSinceSync = true;
            table = await _l2Cache.GetAsync(table.Offset).ConfigureAwait(false);
            int index = _g.L2Index(offset);
            var old = EntryAt(table, index);
            SetEntry(table, index, L2Entry.CompressedAt(_g, host, compressed.Length));
            QueueFree(old, discard: false);
            _lastDecompressed = null;
        }
        finally
        {
            _lock.Release();
        }
    }
}

public sealed partial class Qcow2Node
{
    /// <inheritdoc />
    public override bool CanChangeBackingFile => true;

    /// <summary>
    /// Rewrites the backing file name and format in cluster 0 (qemu-img rebase, amend). A null
    /// name removes both.
    /// </summary>
    public override async ValueTask ChangeBackingFileAsync(string? name, string? format, CancellationToken ct = default)
    {
        EnsureWritable();
        await _lock.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            await FlushLockedAsync(ct).ConfigureAwait(false);
            string? oldName = _header.BackingFile, oldFormat = _header.BackingFormat;
            _header.BackingFile = name;
            _header.BackingFormat = name is null ? null : format;
            byte[] cluster0;
            try
            {
                cluster0 = _header.Serialize();
            }
            catch
            {
                _header.BackingFile = oldName;
                _header.BackingFormat = oldFormat;
                throw;
            }
            await File.WriteAsync(0, cluster0, WriteFlags.None, ct).ConfigureAwait(false);
            await SyncFileAsync().ConfigureAwait(false);
        }
        finally
        {
            _lock.Release();
        }
    }

    /// <summary>
    /// qcow2_amend_options: reads the amend options in their list order (size, compat,
    /// backing_file, backing_fmt, data_file, data_file_raw, lazy_refcounts, refcount_bits,
    /// encrypt.*), refusing bad values before anything is written; then upgrades the version,
    /// changes the refcount width, refuses a backing file change, changes lazy_refcounts and
    /// the size, and downgrades last.
    /// <paramref name="status"/> gets (done, total) while a downgrade works.
    /// </summary>
    /// <exception cref="NativeIOException">QEMU's refusal (its hint, if any, on the lines after the message).</exception>
    public override async ValueTask AmendAsync(QemuOpts options, Action<long, long>? status = null, CancellationToken ct = default)
    {
        EnsureWritable();
        int oldVersion = (int)_header.Version, newVersion = oldVersion;
        switch (options.Get("compat"))
        {
            case null: break;
            case "0.10" or "v2": newVersion = 2; break;
            case "1.1" or "v3": newVersion = 3; break;
            case var v: throw new NativeIOException(Errno.EINVAL, $"Unknown compatibility level {v}");
        }
        long newSize = (long)(options.GetNumber("size") ?? 0);
        string? backingFile = options.Get("backing_file"), backingFormat = options.Get("backing_fmt");
        if (options.Contains("data_file"))
            throw new NativeIOException(Errno.EINVAL, "data-file can only be set for images that use an external data file");
        if (options.GetBool("data_file_raw") == true)
            throw new NativeIOException(Errno.EINVAL, "data-file-raw cannot be set on existing images");
        bool lazy = options.GetBool("lazy_refcounts") ?? _header.LazyRefcounts;
        long refcountBits = _g.RefcountBits;
        if (options.GetNumber("refcount_bits") is { } bits)
        {
            if ((long)bits <= 0 || bits > 64 || !ulong.IsPow2(bits))
                throw new NativeIOException(Errno.EINVAL, "Refcount width must be a power of two and may not exceed 64 bits");
            refcountBits = (long)bits;
        }
        if (options.Descriptors.Any(d => d.Name.StartsWith("encrypt.", StringComparison.Ordinal) && options.Contains(d.Name)))
            throw new NativeIOException(Errno.EINVAL, "Can't amend encryption options - encryption not present");
        // The steps in qemu-img 7.2's order (as it behaves): upgrade, refcount width, the
        // backing file check, lazy refcounts, size, downgrade.
        if (newVersion > oldVersion) await WriteVersionAsync(newVersion, ct).ConfigureAwait(false);
        if (refcountBits != _g.RefcountBits)
        {
            if (newVersion < 3 && refcountBits != 16)
                throw new NativeIOException(Errno.EINVAL, "Refcount widths other than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)");
            throw new NativeIOException(Errno.ENOTSUP, "vdisk cannot change refcount_bits yet");
        }
        if ((backingFile is not null || backingFormat is not null)
            && (backingFile != _header.BackingFile || backingFormat != _header.BackingFormat))
            throw new NativeIOException(Errno.EINVAL, "Cannot amend the backing file\nYou can use 'qemu-img rebase' instead.");
        if (lazy != _header.LazyRefcounts)
        {
            if (lazy && newVersion < 3)
                throw new NativeIOException(Errno.EINVAL, "Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)");
            await SetLazyRefcountsAsync(lazy, ct).ConfigureAwait(false);
        }
        if (newSize != 0) await ResizeAsync(newSize, Preallocation.Off, ct).ConfigureAwait(false);
        if (newVersion < oldVersion) await DowngradeAsync(status, ct).ConfigureAwait(false);
    }

    /// <summary>Changes lazy_refcounts (v3 only): switching them off makes the image clean first.</summary>
    private async ValueTask SetLazyRefcountsAsync(bool enabled, CancellationToken ct)
    {
        await _lock.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            await FlushLockedAsync(ct).ConfigureAwait(false);
            if (!enabled) await MarkCleanLockedAsync().ConfigureAwait(false);
            if (enabled) _header.CompatibleFeatures |= Qcow2Features.CompatLazyRefcounts;
            else _header.CompatibleFeatures &= ~Qcow2Features.CompatLazyRefcounts;
            var buf = new byte[8];
            BinaryPrimitives.WriteUInt64BigEndian(buf, _header.CompatibleFeatures);
            await File.WriteAsync(80, buf, WriteFlags.None, ct).ConfigureAwait(false);
            await SyncFileAsync().ConfigureAwait(false);
        }
        finally
        {
            _lock.Release();
        }
    }

    /// <summary>qcow2_mark_clean: with everything flushed, the dirty bit goes.</summary>
    private async ValueTask MarkCleanLockedAsync()
    {
        if ((_header.IncompatibleFeatures & Qcow2Features.IncompatDirty) == 0) return;
        await SetIncompatibleFeaturesAsync(_header.IncompatibleFeatures & ~Qcow2Features.IncompatDirty).ConfigureAwait(false);
        _markedDirty = false;
    }

    /// <summary>Rewrites the header with another version (an upgrade keeps everything else).</summary>
    private async ValueTask WriteVersionAsync(int version, CancellationToken ct)
    {
        await _lock.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            await FlushLockedAsync(ct).ConfigureAwait(false);
            _header.Version = (uint)version;
            var cluster0 = _header.Serialize();
            await File.WriteAsync(0, cluster0, WriteFlags.None, ct).ConfigureAwait(false);
            await SyncFileAsync().ConfigureAwait(false);
        }
        finally
        {
            _lock.Release();
        }
    }

    /// <summary>
    /// qcow2_downgrade to version 2: 16-bit refcounts only, the image made clean, feature bits
    /// cleared, zero clusters turned into data (or, without a backing file, unallocated), and a
    /// zstd compression type reset to zlib when no cluster is compressed.
    /// </summary>
    private async ValueTask DowngradeAsync(Action<long, long>? status, CancellationToken ct)
    {
        if (_g.RefcountOrder != 4) throw new NativeIOException(Errno.ENOTSUP, "compat=0.10 requires refcount_bits=16");
        foreach (var snapshot in _snapshots)
            if (snapshot.VmStateSize > uint.MaxValue || snapshot.DiskSize != (ulong)Length)
                throw new NativeIOException(Errno.ENOTSUP, "Internal snapshots prevent downgrade of image");
        await _lock.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            await FlushLockedAsync(ct).ConfigureAwait(false);
            await MarkCleanLockedAsync().ConfigureAwait(false);
            ulong incompatible = _header.IncompatibleFeatures & ~Qcow2Features.IncompatCompression;
            if (incompatible != 0)
                throw new NativeIOException(Errno.ENOTSUP, $"Cannot downgrade an image with incompatible features 0x{incompatible:x} set");
            await ExpandZeroClustersLockedAsync(status, ct).ConfigureAwait(false);
            bool zstd = (_header.IncompatibleFeatures & Qcow2Features.IncompatCompression) != 0;
            if (zstd && await HasCompressedClustersLockedAsync().ConfigureAwait(false))
                throw new NativeIOException(Errno.ENOTSUP, "Cannot downgrade an image with zstd compression type and existing compressed clusters");
            _header.IncompatibleFeatures = 0;
            _header.CompatibleFeatures = 0;
            _header.AutoclearFeatures = 0;
            _header.CompressionType = Qcow2CompressionType.Zlib;
            _header.UnknownHeaderFields = [];
            _header.Version = 2;
            var cluster0 = _header.Serialize();
            await File.WriteAsync(0, cluster0, WriteFlags.None, ct).ConfigureAwait(false);
            await SyncFileAsync().ConfigureAwait(false);
        }
        finally
        {
            _lock.Release();
        }
    }

    /// <summary>
    /// qcow2_expand_zero_clusters for the active L1 table: a zero cluster without a backing file
    /// becomes unallocated, otherwise a zeroed data cluster (its own, or a new one). The status
    /// follows the L1 entries visited.
    /// </summary>
    private async ValueTask ExpandZeroClustersLockedAsync(Action<long, long>? status, CancellationToken ct)
    {
        int cs = _g.ClusterSize;
        for (long i = 0; i < _l1.Length; i++)
        {
            await ExpandZeroClustersOfTableLockedAsync(i, cs, ct).ConfigureAwait(false);
            status?.Invoke(i + 1, _l1.Length);
        }
    }

    /// <summary>Expands the zero clusters of the L2 table at L1 index <paramref name="i"/>.</summary>
    private async ValueTask ExpandZeroClustersOfTableLockedAsync(long i, int cs, CancellationToken ct)
    {
        long l2 = await L2TableOffsetAsync(i).ConfigureAwait(false);
        if (l2 == 0) return;
        var table = await _l2Cache.GetAsync(l2).ConfigureAwait(false);
        bool any = false;
        for (int j = 0; j < _g.L2Entries && !any; j++)
            any = EntryAt(table, j).Kind is Qcow2ClusterKind.ZeroPlain or Qcow2ClusterKind.ZeroAllocated;
        if (!any) return;
        if (_snapshots.Count > 0)
            throw new NativeIOException(Errno.ENOTSUP, "vdisk cannot downgrade an image with internal snapshots and zero clusters");
        table = await GetL2ForWriteLockedAsync(i).ConfigureAwait(false);
        for (int j = 0; j < _g.L2Entries; j++)
        {
            var entry = EntryAt(table, j);
            long host;
            if (entry.Kind == Qcow2ClusterKind.ZeroPlain)
            {
                if (Backing is null)
                {
                    SetEntry(table, j, default);
                    continue;
                }
                host = await _refcounts.AllocateAsync(1).ConfigureAwait(false);
                table = await _l2Cache.GetAsync(table.Offset).ConfigureAwait(false);
            }
            else if (entry.Kind == Qcow2ClusterKind.ZeroAllocated)
            {
                host = entry.HostOffset;
            }
            else
            {
                continue;
            }
            await CheckMetadataOverlapAsync(host, cs).ConfigureAwait(false);
            await File.WriteZeroesAsync(host, cs, ZeroFlags.None, ct).ConfigureAwait(false);
            SetEntry(table, j, L2Entry.Allocated(host));
        }
        await FlushLockedAsync(ct).ConfigureAwait(false);
    }

    private async ValueTask<bool> HasCompressedClustersLockedAsync()
    {
        for (long i = 0; i < _l1.Length; i++)
        {
            long l2 = await L2TableOffsetAsync(i).ConfigureAwait(false);
            if (l2 == 0) continue;
            var table = await _l2Cache.GetAsync(l2).ConfigureAwait(false);
            for (int j = 0; j < _g.L2Entries; j++)
                if (EntryAt(table, j).Kind == Qcow2ClusterKind.Compressed) return true;
        }
        return false;
    }

    /// <summary>Drops every cluster of the active layer (qemu-img commit empties the top): all ranges fall through to the backing file again.</summary>
    public override async ValueTask MakeEmptyAsync(CancellationToken ct = default)
    {
        EnsureWritable();
        await _lock.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            await DiscardClustersLockedAsync(0, Length, fullDiscard: true).ConfigureAwait(false);
            await FlushLockedAsync(ct).ConfigureAwait(false);
        }
        finally
        {
            _lock.Release();
        }
    }
}
