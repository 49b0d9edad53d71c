using System.Buffers.Binary;
using Vdisk.Graph;
using Vdisk.Native;

namespace Vdisk.Drivers.Qcow2;

/// <summary>How much of a grown image to allocate up front (qemu-img's preallocation modes).</summary>
public enum Preallocation
{
    /// <summary>Allocate nothing.</summary>
    Off,
    /// <summary>Allocate the metadata (L2 tables and clusters), not the file blocks.</summary>
    Metadata,
    /// <summary>Metadata plus fallocate of the data clusters.</summary>
    Falloc,
    /// <summary>Metadata plus zeroes written to the data clusters.</summary>
    Full,
}

public sealed partial class Qcow2Node
{
    /// <inheritdoc />
    public override ValueTask TruncateAsync(long length, CancellationToken cancellationToken = default) =>
        ResizeAsync(length, Preallocation.Off, cancellationToken);

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
        if (entries * 8 > Qcow2Geometry.MaxL1Bytes) throw new NativeIOException(Errno.EFBIG, "Image is too big");
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

    /// <summary>
    /// Writes one whole guest cluster compressed (qemu-io write -c, convert -c). Data that does
    /// not shrink is written normally, as QEMU does.
    /// </summary>
    public async ValueTask WriteCompressedAsync(long offset, ReadOnlyMemory<byte> cluster, CancellationToken ct = default)
    {
        CheckCompressedWrite(offset, cluster.Length);
        await WriteCompressedAsync(offset, cluster, CompressCluster(cluster.Span), ct).ConfigureAwait(false);
    }

    private void CheckCompressedWrite(long offset, int length)
    {
        EnsureWritable();
        if (_g.OffsetInCluster(offset) != 0 || (length != _g.ClusterSize && offset + length != Length))
            throw new NativeIOException(Errno.EINVAL, NativeIOException.Describe(Errno.EINVAL), Filename);
    }

    /// <summary>
    /// Compresses one guest cluster (a short last one is padded with zeroes) as
    /// <see cref="WriteCompressedAsync(long, ReadOnlyMemory{byte}, CancellationToken)"/> would;
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
            Volatile.Write(ref _lastDecompressed, null);
        }
        finally
        {
            _lock.Release();
        }
    }
}

public sealed partial class Qcow2Node
{
    /// <summary>
    /// Rewrites the backing file name and format in cluster 0 (qemu-img rebase, amend). A null
    /// name removes both.
    /// </summary>
    public async ValueTask ChangeBackingFileAsync(string? name, string? format, CancellationToken ct = default)
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

    /// <summary>Changes lazy_refcounts (v3 only): the header is rewritten after a full flush.</summary>
    public async ValueTask SetLazyRefcountsAsync(bool enabled, CancellationToken ct = default)
    {
        EnsureWritable();
        if (_header.Version < 3) throw new NativeIOException(Errno.EINVAL, "Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)");
        await _lock.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            await FlushLockedAsync(ct).ConfigureAwait(false);
            if (!enabled && _markedDirty)
            {
                await SetIncompatibleFeaturesAsync(_header.IncompatibleFeatures & ~Qcow2Features.IncompatDirty).ConfigureAwait(false);
                _markedDirty = false;
            }
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

    /// <summary>
    /// Changes the header version (amend compat=): upgrading writes a v3 header; downgrading
    /// needs a v2-compatible image (16-bit refcounts, deflate, no lazy refcounts, no zero clusters).
    /// </summary>
    public async ValueTask SetVersionAsync(int version, CancellationToken ct = default)
    {
        EnsureWritable();
        if (version == _header.Version) return;
        await _lock.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            await FlushLockedAsync(ct).ConfigureAwait(false);
            if (version == 2)
            {
                if (_g.RefcountOrder != 4) throw new NativeIOException(Errno.ENOTSUP, "Cannot downgrade an image with refcount_bits != 16");
                if (_header.CompressionType != Qcow2CompressionType.Zlib) throw new NativeIOException(Errno.ENOTSUP, "Cannot downgrade an image with a compression type other than zlib");
                if (_header.LazyRefcounts) throw new NativeIOException(Errno.ENOTSUP, "Cannot downgrade an image with lazy refcounts enabled (use lazy_refcounts=off)");
                for (long i = 0; i < _l1.Length; i++)
                {
                    long l2 = await L2TableOffsetAsync(i).ConfigureAwait(false);
                    if (l2 == 0) continue;
                    var table = await _l2Cache.GetAsync(l2).ConfigureAwait(false);
                    for (int j = 0; j < _g.L2Entries; j++)
                        if (EntryAt(table, j).Kind is Qcow2ClusterKind.ZeroPlain or Qcow2ClusterKind.ZeroAllocated)
                            throw new NativeIOException(Errno.ENOTSUP, "vdisk cannot downgrade an image that has zero clusters");
                }
                _header.IncompatibleFeatures = 0;
                _header.CompatibleFeatures = 0;
                _header.AutoclearFeatures = 0;
                _header.UnknownHeaderFields = [];
            }
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

    /// <summary>Drops every cluster of the active layer (qemu-img commit empties the top): all ranges fall through to the backing file again.</summary>
    public async ValueTask MakeEmptyAsync(CancellationToken ct = default)
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
