using System.Buffers.Binary;
using Vdisk.Graph;
using Vdisk.Native;

namespace Vdisk.Drivers.Qcow2;

// qcow2_co_truncate: growing, shrinking and preallocating the virtual disk.
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
        await LockQuiescedAsync(cancellationToken).ConfigureAwait(false);
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
                    await FreeLockedAsync(new(l2, _g.ClusterSize, true)).ConfigureAwait(false);
                }
                await FlushLockedAsync(cancellationToken).ConfigureAwait(false);
                try
                {
                    await _refcounts.ShrinkTableAsync().ConfigureAwait(false);
                }
                catch (NativeIOException e)
                {
                    throw new NativeIOException(e.Errno, $"Failed to discard unused refblocks: {NativeIOException.Describe(e.Errno)}", e.Path);
                }
                await WriteSizeAsync(length).ConfigureAwait(false);
                await TrimFileLockedAsync().ConfigureAwait(false);
                // qcow2_co_truncate shrinks the data file with the disk.
                if (_dataChild is not null) await DataFile.TruncateAsync(length, cancellationToken).ConfigureAwait(false);
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
        // A raw data file must keep mapping every cluster (its metadata is preallocated).
        if (_dataChild is not null && _header.DataFileRaw && preallocation == Preallocation.Off) preallocation = Preallocation.Metadata;
        if (preallocation != Preallocation.Off && length > oldLength)
            await PreallocateAsync(_g.ClusterStart(oldLength), length, preallocation, cancellationToken).ConfigureAwait(false);
        // qcow2_co_truncate forwards the growth to the data file with the preallocation mode.
        if (_dataChild is not null && length > DataFile.Length)
            await DataFile.TruncateAsync(length, preallocation == Preallocation.Metadata ? Preallocation.Off : preallocation, cancellationToken).ConfigureAwait(false);
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
        long newOffset = await AllocateMetadataAsync(_g.SizeToClusters(bytes)).ConfigureAwait(false);
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
        await LockQuiescedAsync(ct).ConfigureAwait(false);
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
                // An external data file keeps clusters at their guest offsets, outside the refcounts.
                long host = HasExternalDataFile ? _g.ClusterStart(pos) : await _refcounts.AllocateAsync(count).ConfigureAwait(false);
                table = await _l2Cache.GetAsync(table.Offset).ConfigureAwait(false);
                for (int i = 0; i < count; i++)
                {
                    var old = EntryAt(table, first + i);
                    if (KindOf(old) != Qcow2ClusterKind.Unallocated && KindOf(old) != Qcow2ClusterKind.ZeroPlain) continue;
                    SetEntry(table, first + i, L2Entry.Allocated(host + (long)i * cs));
                }
                if (!HasExternalDataFile) fileEnd = Math.Max(fileEnd, host + (long)count * cs);
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
}
