using System.Buffers.Binary;
using Vdisk.Graph;
using Vdisk.Native;
using Vdisk.Options;

namespace Vdisk.Drivers.Qcow2;

// qcow2_amend_options: version, refcount width, lazy_refcounts and size changed in place.
public sealed partial class Qcow2Node
{
    /// <summary>
    /// qcow2_amend_options: reads the amend options in their list order (encrypt.*, size,
    /// compat, backing_file, backing_fmt, data_file, data_file_raw, lazy_refcounts,
    /// refcount_bits), refusing bad values before anything is written; then upgrades the
    /// version, changes the LUKS key slots (<paramref name="force"/> allows overwriting an
    /// active slot and erasing the last), changes the refcount width, refuses a backing file change, changes lazy_refcounts and
    /// the size, and downgrades last.
    /// <paramref name="status"/> gets (done, total) while a downgrade works.
    /// </summary>
    /// <exception cref="NativeIOException">QEMU's refusal (its hint, if any, on the lines after the message).</exception>
    public override async ValueTask AmendAsync(QemuOpts options, bool force, Action<long, long>? status = null, CancellationToken ct = default)
    {
        EnsureWritable();
        // The encrypt.* options come first in QEMU's list, so their checks come first.
        bool encryptionUpdate = options.Descriptors.Any(d => d.Name.StartsWith("encrypt.", StringComparison.Ordinal) && options.Contains(d.Name));
        if (encryptionUpdate && !IsEncrypted)
            throw new NativeIOException(Errno.EINVAL, "Can't amend encryption options - encryption not present");
        if (encryptionUpdate && _header.CryptMethod != CryptLuks)
            throw new NativeIOException(Errno.ENOTSUP, "Only LUKS encryption options can be amended");
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
        string? dataFile = options.Get("data_file");
        if (dataFile is not null && !HasExternalDataFile)
            throw new NativeIOException(Errno.EINVAL, "data-file can only be set for images that use an external data file");
        bool dataFileRaw = options.GetBool("data_file_raw") ?? _header.DataFileRaw;
        if (dataFileRaw && !_header.DataFileRaw)
            throw new NativeIOException(Errno.EINVAL, "data-file-raw cannot be set on existing images");
        bool lazy = options.GetBool("lazy_refcounts") ?? _header.LazyRefcounts;
        long refcountBits = _g.RefcountBits;
        if (options.GetNumber("refcount_bits") is { } bits)
        {
            if ((long)bits <= 0 || bits > 64 || !ulong.IsPow2(bits))
                throw new NativeIOException(Errno.EINVAL, "Refcount width must be a power of two and may not exceed 64 bits");
            refcountBits = (long)bits;
        }
        // The steps in qemu-img 7.2's order (as it behaves): upgrade, refcount width, the
        // backing file check, lazy refcounts, size, downgrade.
        if (newVersion > oldVersion) await WriteVersionAsync(newVersion, ct).ConfigureAwait(false);
        if (encryptionUpdate) await AmendEncryptionAsync(options, force, ct).ConfigureAwait(false);
        // An empty name drops the extension: the data file must then be given at every open.
        if (dataFile is not null || dataFileRaw != _header.DataFileRaw)
            await RewriteDataFileHeaderAsync(dataFile is null ? _header.DataFile : dataFile.Length == 0 ? null : dataFile, dataFileRaw, ct).ConfigureAwait(false);
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

    /// <summary>The data file name and the data-file-raw bit changed, and the header rewritten (qcow2_update_header).</summary>
    private async ValueTask RewriteDataFileHeaderAsync(string? name, bool raw, CancellationToken ct)
    {
        await LockQuiescedAsync(ct).ConfigureAwait(false);
        try
        {
            await FlushLockedAsync(ct).ConfigureAwait(false);
            _header.DataFile = name;
            if (raw) _header.AutoclearFeatures |= Qcow2Features.AutoclearDataFileRaw;
            else _header.AutoclearFeatures &= ~Qcow2Features.AutoclearDataFileRaw;
            await File.WriteAsync(0, _header.Serialize(), WriteFlags.None, ct).ConfigureAwait(false);
            await SyncFileAsync().ConfigureAwait(false);
        }
        finally
        {
            _lock.Release();
        }
    }

    /// <summary>Changes lazy_refcounts (v3 only): switching them off makes the image clean first.</summary>
    private async ValueTask SetLazyRefcountsAsync(bool enabled, CancellationToken ct)
    {
        await LockQuiescedAsync(ct).ConfigureAwait(false);
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
            UseLazyRefcounts = enabled;
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
        await LockQuiescedAsync(ct).ConfigureAwait(false);
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
        if (HasExternalDataFile) throw new NativeIOException(Errno.ENOTSUP, "Cannot downgrade an image with a data file");
        foreach (var snapshot in _snapshots)
            if (snapshot.VmStateSize > uint.MaxValue || snapshot.DiskSize != (ulong)Length)
                throw new NativeIOException(Errno.ENOTSUP, "Internal snapshots prevent downgrade of image");
        await LockQuiescedAsync(ct).ConfigureAwait(false);
        try
        {
            await FlushLockedAsync(ct).ConfigureAwait(false);
            await MarkCleanLockedAsync().ConfigureAwait(false);
            ulong incompatible = _header.IncompatibleFeatures & ~Qcow2Features.IncompatCompression;
            if (incompatible != 0)
                throw new NativeIOException(Errno.ENOTSUP, $"Cannot downgrade an image with incompatible features 0x{incompatible:x} set");
            try
            {
                await ExpandZeroClustersLockedAsync(status, ct).ConfigureAwait(false);
            }
            catch (NativeIOException e) when (e.Errno != Errno.ENOTSUP)
            {
                // qcow2_downgrade's wording for whatever failed underneath (ENOTSUP is vdisk's own refusal).
                throw new NativeIOException(e.Errno, $"Failed to turn zero into data clusters: {NativeIOException.Describe(e.Errno)}", e.Path);
            }
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
            any = KindOf(EntryAt(table, j)) is Qcow2ClusterKind.ZeroPlain or Qcow2ClusterKind.ZeroAllocated;
        if (!any) return;
        if (_snapshots.Count > 0)
            throw new NativeIOException(Errno.ENOTSUP, "vdisk cannot downgrade an image with internal snapshots and zero clusters");
        table = await GetL2ForWriteLockedAsync(i).ConfigureAwait(false);
        for (int j = 0; j < _g.L2Entries; j++)
        {
            var entry = EntryAt(table, j);
            long host;
            if (KindOf(entry) == Qcow2ClusterKind.ZeroPlain)
            {
                if (Backing is null)
                {
                    SetEntry(table, j, default);
                    continue;
                }
                host = await _refcounts.AllocateAsync(1).ConfigureAwait(false);
                table = await _l2Cache.GetAsync(table.Offset).ConfigureAwait(false);
            }
            else if (KindOf(entry) == Qcow2ClusterKind.ZeroAllocated)
            {
                host = entry.HostOffset;
            }
            else
            {
                continue;
            }
            if (_g.OffsetInCluster(host) != 0)
                await SignalCorruptionAsync($"Cluster allocation offset {Hex(host)} unaligned (L2 offset: {Hex(table.Offset)}, L2 index: {Hex(j)})").ConfigureAwait(false);
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
                if (KindOf(EntryAt(table, j)) == Qcow2ClusterKind.Compressed) return true;
        }
        return false;
    }
}
