using System.Buffers.Binary;
using Vdisk.Graph;
using Vdisk.Native;

namespace Vdisk.Drivers.Qcow2;

/// <summary>
/// Persistent dirty bitmaps (qcow2-bitmap.c). An active open loads the bitmap directory and the
/// bits of every consistent bitmap; a read-write open then marks them in use on disk, so a writer
/// that dies leaves them inconsistent. Writes set the bits of enabled bitmaps in memory; closing
/// stores every bitmap in new clusters, points the header at a new directory and frees the old
/// clusters (qcow2_store_persistent_dirty_bitmaps).
/// </summary>
public sealed partial class Qcow2Node
{
    /// <summary>Newest first, as QEMU's bs->dirty_bitmaps (each new bitmap goes to the head).</summary>
    private readonly List<DirtyBitmap> _bitmaps = new();
    /// <summary>Directory entries of removed bitmaps, whose clusters the next store frees.</summary>
    private readonly List<Qcow2BitmapEntry> _removedBitmaps = new();
    /// <summary>The directory as the file holds it now (its clusters are freed when it is replaced).</summary>
    private List<Qcow2BitmapEntry> _storedBitmaps = new();
    /// <summary>Whether closing must store the bitmaps (they were loaded read-write or changed).</summary>
    private bool _bitmapsNeedStore;
    /// <summary>Whether the directory on disk has every stored bitmap in use (done before the first change).</summary>
    private bool _bitmapsMarkedInUse;

    /// <inheritdoc />
    public override IReadOnlyList<DirtyBitmap> DirtyBitmaps => _bitmaps;

    /// <inheritdoc />
    public override bool SupportsPersistentBitmaps => _header.Version >= 3;

    /// <inheritdoc />
    public override DirtyBitmap AddPersistentBitmap(string name, long granularity, bool disabled)
    {
        if (_bitmaps.Any(b => b.Name == name)) throw new InvalidOperationException($"Bitmap already exists: {name}");
        string cannot = $"Can't make bitmap '{name}' persistent in '{NodeName}': ";
        if (_header.Version < 3) throw new InvalidOperationException(cannot + "Cannot store dirty bitmaps in qcow2 v2 files");
        if (Qcow2BitmapDirectory.CheckNewBitmap(name, granularity, Length, _g.ClusterSize) is { } reason)
            throw new InvalidOperationException(cannot + reason);
        var persistent = _bitmaps.Where(b => b.Persistent).ToList();
        if (persistent.Count + 1 > Qcow2BitmapDirectory.MaxBitmaps)
            throw new InvalidOperationException(cannot + "Maximum number of persistent bitmaps is already reached");
        long directory = persistent.Append(null).Sum(b => Qcow2BitmapDirectory.EntrySize(System.Text.Encoding.UTF8.GetByteCount(b?.Name ?? name)));
        if (directory > Qcow2BitmapDirectory.MaxDirectorySize)
            throw new InvalidOperationException(cannot + "Not enough space in the bitmap directory");
        if (IsReadOnly) throw new InvalidOperationException(cannot + "No write access");
        var bitmap = new DirtyBitmap(name, System.Numerics.BitOperations.TrailingZeroCount(granularity), Length, _g.ClusterSize)
        {
            Persistent = true,
            Enabled = !disabled,
        };
        _bitmaps.Insert(0, bitmap);
        _bitmapsNeedStore = true;
        return bitmap;
    }

    /// <inheritdoc />
    public override void RemovePersistentBitmap(DirtyBitmap bitmap)
    {
        _bitmaps.Remove(bitmap);
        // qcow2_co_remove_persistent_dirty_bitmap drops it from the directory at once: a new
        // bitmap of the same name is a new entry at the end.
        int stored = _storedBitmaps.FindIndex(e => e.Name == bitmap.Name);
        if (stored >= 0)
        {
            _removedBitmaps.Add(_storedBitmaps[stored]);
            _storedBitmaps.RemoveAt(stored);
        }
        _bitmapsNeedStore = true;
    }

    /// <inheritdoc />
    public override void BitmapsChanged() => _bitmapsNeedStore = true;

    /// <summary>bdrv_set_dirty: a write, zero write or discard of [offset, offset+length) dirties the enabled bitmaps.</summary>
    private void MarkBitmapsDirty(long offset, long length)
    {
        foreach (var bitmap in _bitmaps)
        {
            if (!bitmap.Enabled || bitmap.Inconsistent) continue;
            bitmap.SetRange(offset, length);
            _bitmapsNeedStore = true;
        }
    }

    /// <summary>
    /// update_ext_header_and_dir_in_place: the same directory with every bitmap in use, so that
    /// a writer that dies leaves them inconsistent. Done when a read-write open loads them, or
    /// before the first change of a node opened read-only and reopened read-write.
    /// </summary>
    private async ValueTask MarkBitmapsInUseAsync(CancellationToken ct)
    {
        if (_bitmapsMarkedInUse || _storedBitmaps.Count == 0 || _header.Bitmaps is not { } ext) return;
        var inUse = _storedBitmaps.Select(e => e with { Flags = e.Flags | Qcow2BitmapDirectory.FlagInUse }).ToList();
        await File.WriteAsync((long)ext.DirectoryOffset, Qcow2BitmapDirectory.Serialize(inUse), WriteFlags.None, ct).ConfigureAwait(false);
        await SyncFileAsync().ConfigureAwait(false);
        _storedBitmaps = inUse;
        _bitmapsMarkedInUse = true;
        _bitmapsNeedStore = true;
    }

    /// <summary>
    /// qcow2_load_dirty_bitmaps: the directory and the bits of consistent bitmaps; a read-write
    /// open marks them in use on disk. Without the autoclear bit the bitmaps were touched by a
    /// program that does not know them: QEMU warns, and a read-write open drops the extension.
    /// </summary>
    private async ValueTask LoadBitmapsAsync(bool writable, CancellationToken ct)
    {
        if (_header.Bitmaps is not { } ext) return;
        if ((_header.AutoclearFeatures & Qcow2Features.AutoclearBitmaps) == 0)
        {
            Diagnostics.Warn("a program lacking bitmap support modified this file, so all bitmaps are now considered inconsistent");
            Diagnostics.Print("Some clusters may be leaked, run 'qemu-img check -r' on the image file to fix.");
            if (writable)
            {
                _header.Extensions.RemoveAll(e => e.Type == Qcow2Header.ExtensionBitmaps);
                await File.WriteAsync(0, _header.Serialize(), WriteFlags.None, ct).ConfigureAwait(false);
                await SyncFileAsync().ConfigureAwait(false);
            }
            return;
        }
        var dir = new byte[Math.Min(ext.DirectorySize, (ulong)Qcow2BitmapDirectory.MaxDirectorySize + 1)];
        if (dir.Length > 0 && dir.Length <= Qcow2BitmapDirectory.MaxDirectorySize)
        {
            try
            {
                await File.ReadAsync((long)ext.DirectoryOffset, dir, ct).ConfigureAwait(false);
            }
            catch (NativeIOException e)
            {
                throw new NativeIOException(e.Errno, "Failed to read bitmap directory: " + NativeIOException.Describe(e.Errno));
            }
        }
        _storedBitmaps = Qcow2BitmapDirectory.Parse(dir, ext.Count, _g.ClusterSize, Length);
        foreach (var entry in _storedBitmaps)
        {
            var bitmap = new DirtyBitmap(entry.Name, entry.GranularityBits, Length, _g.ClusterSize)
            {
                Persistent = true,
                Enabled = entry.Auto,
                Inconsistent = entry.InUse,
            };
            if (!entry.InUse) await LoadBitmapBitsAsync(entry, bitmap, ct).ConfigureAwait(false);
            _bitmaps.Insert(0, bitmap);
        }
        if (writable) await MarkBitmapsInUseAsync(ct).ConfigureAwait(false);
    }

    /// <summary>load_bitmap_data: each table entry is a cluster of bits, zero (no offset) or all ones (flag 1).</summary>
    private async ValueTask LoadBitmapBitsAsync(Qcow2BitmapEntry entry, DirtyBitmap bitmap, CancellationToken ct)
    {
        var table = await ReadBitmapTableAsync(entry, ct).ConfigureAwait(false);
        long needed = bitmap.ChunkCount;
        for (long i = 0; i < Math.Min(needed, table.Length); i++)
        {
            ulong e = table[i];
            ulong offset = e & Qcow2BitmapDirectory.TableEntryOffsetMask;
            var bytes = new byte[_g.ClusterSize];
            if (offset == 0)
            {
                if ((e & Qcow2BitmapDirectory.TableEntryAllOnes) == 0) continue;
                Array.Fill(bytes, (byte)0xff);
            }
            else
            {
                await File.ReadAsync((long)offset, bytes, ct).ConfigureAwait(false);
            }
            bitmap.SetChunk(i, bytes);
        }
    }

    /// <summary>bitmap_table_load, with check_table_entry's validation.</summary>
    private async ValueTask<ulong[]> ReadBitmapTableAsync(Qcow2BitmapEntry entry, CancellationToken ct)
    {
        var table = await ReadTableEntriesAsync(File, (long)entry.TableOffset, (int)entry.TableSize, $"Could not read bitmap '{entry.Name}' from image", ct).ConfigureAwait(false);
        foreach (ulong e in table)
        {
            ulong offset = e & Qcow2BitmapDirectory.TableEntryOffsetMask;
            bool bad = (e & Qcow2BitmapDirectory.TableEntryReservedMask) != 0
                || (offset & (ulong)(_g.ClusterSize - 1)) != 0
                || (offset != 0 && (e & Qcow2BitmapDirectory.TableEntryAllOnes) != 0);
            if (bad) throw new Qcow2FormatException($"Could not read bitmap '{entry.Name}' from image: {NativeIOException.Describe(Errno.EINVAL)}");
        }
        return table;
    }

    /// <summary>
    /// qcow2_store_persistent_dirty_bitmaps, under the lock: consistent bitmaps are written to new
    /// clusters (all-zero clusters as empty entries), inconsistent ones keep their stored table and
    /// in-use flag; then the new directory, the header, and the old clusters freed.
    /// </summary>
    private async ValueTask StoreBitmapsLockedAsync(CancellationToken ct)
    {
        if (!_bitmapsNeedStore) return;
        var oldEntries = _storedBitmaps;
        var oldTablesToFree = new List<Qcow2BitmapEntry>(_removedBitmaps);
        var entries = new List<Qcow2BitmapEntry>();
        // Bitmaps already in the directory keep their places; new ones follow in list order.
        var persistent = _bitmaps.Where(b => b.Persistent).ToList();
        var ordered = oldEntries.Select(e => persistent.FirstOrDefault(b => b.Name == e.Name)).OfType<DirtyBitmap>()
            .Concat(persistent.Where(b => !oldEntries.Any(e => e.Name == b.Name))).ToList();
        foreach (var bitmap in ordered)
        {
            var stored = oldEntries.FirstOrDefault(e => e.Name == bitmap.Name);
            if (bitmap.Inconsistent && stored is not null)
            {
                entries.Add(stored);
                continue;
            }
            if (stored is not null) oldTablesToFree.Add(stored);
            var table = new ulong[bitmap.ChunkCount];
            for (long i = 0; i < table.Length; i++)
            {
                if (bitmap.GetChunk(i) is not { } bytes) continue;
                long cluster = await AllocateMetadataAsync(1).ConfigureAwait(false);
                await File.WriteAsync(cluster, bytes, WriteFlags.None, ct).ConfigureAwait(false);
                table[i] = (ulong)cluster;
            }
            var raw = new byte[table.Length * 8L];
            for (int i = 0; i < table.Length; i++) BinaryPrimitives.WriteUInt64BigEndian(raw.AsSpan(i * 8), table[i]);
            long tableOffset = await AllocateMetadataAsync(_g.SizeToClusters(raw.Length)).ConfigureAwait(false);
            await File.WriteAsync(tableOffset, raw, WriteFlags.None, ct).ConfigureAwait(false);
            entries.Add(new Qcow2BitmapEntry((ulong)tableOffset, (uint)table.Length, bitmap.Enabled ? Qcow2BitmapDirectory.FlagAuto : 0,
                bitmap.GranularityBits, bitmap.Name));
        }
        // Bitmaps removed since the directory was read leave with it.
        oldTablesToFree.AddRange(oldEntries.Where(e => !entries.Any(n => n.Name == e.Name)));

        long directoryOffset = 0;
        var directory = Qcow2BitmapDirectory.Serialize(entries);
        if (entries.Count > 0)
        {
            directoryOffset = await AllocateMetadataAsync(_g.SizeToClusters(directory.Length)).ConfigureAwait(false);
            await File.WriteAsync(directoryOffset, directory, WriteFlags.None, ct).ConfigureAwait(false);
        }
        // The refcounts and the bitmaps reach the disk before the header points at them.
        await _refcounts.WriteBackAsync().ConfigureAwait(false);
        await SyncFileAsync().ConfigureAwait(false);

        var oldDirectory = _header.Bitmaps;
        _header.Extensions.RemoveAll(e => e.Type == Qcow2Header.ExtensionBitmaps);
        if (entries.Count > 0)
        {
            _header.Extensions.Add(new(Qcow2Header.ExtensionBitmaps,
                Qcow2BitmapDirectory.ExtensionData((uint)entries.Count, (ulong)directory.Length, (ulong)directoryOffset)));
            _header.AutoclearFeatures |= Qcow2Features.AutoclearBitmaps;
        }
        else
        {
            _header.AutoclearFeatures &= ~Qcow2Features.AutoclearBitmaps;
        }
        await File.WriteAsync(0, _header.Serialize(), WriteFlags.None, ct).ConfigureAwait(false);
        await SyncFileAsync().ConfigureAwait(false);
        _storedBitmaps = entries;
        _bitmapsMarkedInUse = false;
        _removedBitmaps.Clear();
        _bitmapsNeedStore = false;

        if (oldDirectory is { } old && old.DirectoryOffset != 0 && old.DirectorySize > 0)
            await FreeClustersLockedAsync((long)old.DirectoryOffset, (long)old.DirectorySize).ConfigureAwait(false);
        foreach (var entry in oldTablesToFree) await FreeBitmapClustersLockedAsync(entry, ct).ConfigureAwait(false);
    }

    /// <summary>free_bitmap_clusters: the bitmap's data clusters, then its table.</summary>
    private async ValueTask FreeBitmapClustersLockedAsync(Qcow2BitmapEntry entry, CancellationToken ct)
    {
        ulong[] table;
        try
        {
            table = await ReadBitmapTableAsync(entry, ct).ConfigureAwait(false);
        }
        catch (IOException)
        {
            return; // a broken table only leaks, as in QEMU
        }
        foreach (ulong e in table)
        {
            long offset = (long)(e & Qcow2BitmapDirectory.TableEntryOffsetMask);
            if (offset != 0) await FreeClustersLockedAsync(offset, _g.ClusterSize).ConfigureAwait(false);
        }
        await FreeClustersLockedAsync((long)entry.TableOffset, entry.TableSize * 8L).ConfigureAwait(false);
    }
}
