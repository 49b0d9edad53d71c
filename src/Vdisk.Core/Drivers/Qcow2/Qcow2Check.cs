using System.Buffers.Binary;
using Vdisk.Native;

namespace Vdisk.Drivers.Qcow2;

public sealed partial class Qcow2Node
{
    /// <summary>Reference counts computed from the metadata: an array over the file, a dictionary past it.</summary>
    private sealed class ReferenceMap(long clusters)
    {
        private readonly ulong[] _within = new ulong[Math.Max(clusters, 0)];
        private readonly SortedDictionary<long, ulong> _beyond = new();

        public long Count => Math.Max(_within.LongLength, _beyond.Count == 0 ? 0 : _beyond.Keys.Last() + 1);

        public ulong this[long cluster]
        {
            get => cluster < _within.LongLength ? _within[cluster] : _beyond.GetValueOrDefault(cluster);
            set
            {
                if (cluster < _within.LongLength) _within[cluster] = value;
                else _beyond[cluster] = value;
            }
        }

        /// <summary>Clusters to compare: all of the file, plus referenced ones past it.</summary>
        public IEnumerable<long> Indexes()
        {
            for (long i = 0; i < _within.LongLength; i++) yield return i;
            foreach (var k in _beyond.Keys) yield return k;
        }
    }

    /// <summary>
    /// qcow2_co_check: checks (and with <paramref name="mode"/> repairs) the image under the
    /// node's lock; <paramref name="log"/> gets the per-cluster lines QEMU prints on stderr.
    /// </summary>
    public override Task<ImageCheck> CheckAsync(RepairMode mode, Action<string>? log, CancellationToken cancellationToken = default) =>
        CheckLockedAsync(mode, log ?? (_ => { }), cancellationToken);

    private async Task<ImageCheck> CheckLockedAsync(RepairMode fix, Action<string> log, CancellationToken ct)
    {
        // bdrv_co_check on a node a fatal corruption left without a driver (qemu-img's double check after such a repair).
        EnsureUsable();
        await LockQuiescedAsync(ct).ConfigureAwait(false);
        try
        {
            if (!IsReadOnly) await FlushLockedAsync(ct).ConfigureAwait(false);
            if (fix != RepairMode.None && IsReadOnly)
                throw new NativeIOException(Errno.EROFS, NativeIOException.Describe(Errno.EROFS), Filename);
            var res = new ImageCheck();
            _fixing = fix;
            await CheckReadSnapshotTableAsync(res, log, ct).ConfigureAwait(false);
            res.TotalClusters = _g.SizeToClusters(Length);
            long fileClusters = _g.SizeToClusters(File.Length);

            var (refs, rebuild) = await CalculateReferencesAsync(res, fix, log, ct).ConfigureAwait(false);
            // A repair may have grown the file to cover a refcount block outside it.
            fileClusters = _g.SizeToClusters(File.Length);
            var pre = res.Clone();
            long highest = await CompareRefcountsAsync(refs, res, RepairMode.None, log, fileClusters).ConfigureAwait(false);
            rebuild |= _rebuildNeeded;
            _rebuildNeeded = false;
            if (rebuild && (fix & RepairMode.Errors) != 0)
            {
                var old = res.Clone();
                log("Rebuilding refcount structure");
                await RebuildRefcountsAsync(refs, res).ConfigureAwait(false);
                res.Corruptions = 0;
                res.Leaks = 0;
                var fresh = new ImageCheck();
                (refs, _) = await CalculateReferencesAsync(fresh, RepairMode.None, _ => { }, ct).ConfigureAwait(false);
                long freshLeaks = 0;
                if ((fix & RepairMode.Leaks) != 0)
                {
                    var leakRes = new ImageCheck();
                    highest = await CompareRefcountsAsync(refs, leakRes, RepairMode.Leaks, log, _g.SizeToClusters(File.Length)).ConfigureAwait(false);
                    if (_rebuildNeeded) log("ERROR rebuilt refcount structure is still broken");
                    _rebuildNeeded = false;
                    freshLeaks = leakRes.Leaks;
                }
                if (res.Corruptions < old.Corruptions) res.CorruptionsFixed += old.Corruptions - res.Corruptions;
                if (res.Leaks < old.Leaks) res.LeaksFixed += old.Leaks - res.Leaks;
                res.Leaks += freshLeaks;
            }
            else if (fix != RepairMode.None)
            {
                if (rebuild)
                {
                    log("ERROR need to rebuild refcount structures");
                    res.CheckErrors++;
                    throw new NativeIOException(Errno.EIO, NativeIOException.Describe(Errno.EIO), Filename);
                }
                if (res.Leaks > 0 || res.Corruptions > 0)
                {
                    res = pre;
                    highest = await CompareRefcountsAsync(refs, res, fix, log, fileClusters).ConfigureAwait(false);
                }
            }
            // A fatal corruption met on the way leaves QEMU's node without a driver, whose caches
            // are never written: the repairs made in them (leaks freed) do not reach the file.
            if (!_unusable) await _refcounts.WriteBackAsync().ConfigureAwait(false);
            await CheckCopiedFlagsAsync(res, fix, log).ConfigureAwait(false);
            if (!IsReadOnly && !_unusable) await FlushLockedAsync(ct).ConfigureAwait(false);
            res.ImageEndOffset = (highest + 1) << _g.ClusterBits;
            if (fix != RepairMode.None && res.CheckErrors == 0 && res.Corruptions == 0)
            {
                ulong cleared = _header.IncompatibleFeatures & ~(Qcow2Features.IncompatDirty | Qcow2Features.IncompatCorrupt);
                if (cleared != _header.IncompatibleFeatures) await SetIncompatibleFeaturesAsync(cleared).ConfigureAwait(false);
            }
            return res;
        }
        finally
        {
            _fixing = RepairMode.None;
            _lock.Release();
        }
    }

    /// <summary>
    /// qcow2_check_read_snapshot_table: a check-mode open skipped the snapshot table, so it is read
    /// here; a table that cannot be read ends the check (QEMU: an error, then "Check failed").
    /// v3 entries must carry at least the 16 bytes of extra data QEMU always writes.
    /// </summary>
    private async Task CheckReadSnapshotTableAsync(ImageCheck res, Action<string> log, CancellationToken ct)
    {
        if ((_openFlags & Permissions.OpenFlags.Check) != 0)
        {
            _snapshots = new();
            uint count = _header.SnapshotCount;
            try
            {
                ValidateTable(_g, _header.SnapshotsOffset, count, 40, 40L * Qcow2Snapshot.MaxSnapshots, "snapshot table");
            }
            catch (IOException e)
            {
                res.CheckErrors++;
                string report = "ERROR " + e.Message;
                if (count > Qcow2Snapshot.MaxSnapshots)
                    report += $"\nYou can force-remove all {count - Qcow2Snapshot.MaxSnapshots} overhanging snapshots with qemu-img check -r all";
                throw new ImageCheckException(e is NativeIOException n ? n.Errno : Errno.EINVAL, report);
            }
            try
            {
                _snapshots = await ReadSnapshotsAsync(File, _header, ct).ConfigureAwait(false);
            }
            catch (IOException e)
            {
                res.CheckErrors++;
                throw new ImageCheckException(e is NativeIOException n ? n.Errno : Errno.EFBIG, "ERROR failed to read the snapshot table: " + e.Message);
            }
        }
        if (_header.Version < 3) return;
        for (int i = 0; i < _snapshots.Count; i++)
        {
            if (_snapshots[i].ExtraData.Length >= 16) continue;
            // vdisk does not rewrite the snapshot table (QEMU's -r all does): reported, not repaired.
            res.Corruptions++;
            log($"ERROR snapshot table entry {i} is incomplete");
        }
    }

    private bool _rebuildNeeded;

    /// <summary>qcow2_inc_refcounts_imrt: counts one reference to every cluster of the range.</summary>
    private void Reference(ReferenceMap refs, ImageCheck res, long offset, long size, Action<string> log)
    {
        if (size <= 0) return;
        // The last cluster may be partly allocated, so less than a cluster past the end is fine;
        // more is a reference to data the file does not have.
        if (offset < 0 || offset > long.MaxValue - size || offset + size - File.Length >= _g.ClusterSize)
        {
            log($"ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset 0x{offset:x} size 0x{size:x}");
            res.Corruptions++;
            return;
        }
        long first = offset >> _g.ClusterBits, last = (offset + size - 1) >> _g.ClusterBits;
        for (long k = first; k <= last; k++)
        {
            ulong r = refs[k];
            if (r == _g.RefcountMax)
            {
                log($"ERROR: overflow cluster offset=0x{k << _g.ClusterBits:x}");
                log("Use qemu-img amend to increase the refcount entry width or qemu-img convert to create a clean copy if the image cannot be opened for writing");
                res.Corruptions++;
                continue;
            }
            refs[k] = r + 1;
        }
    }

    private async Task<(ReferenceMap Refs, bool Rebuild)> CalculateReferencesAsync(ImageCheck res, RepairMode fix, Action<string> log, CancellationToken ct)
    {
        var refs = new ReferenceMap(_g.SizeToClusters(File.Length));
        Reference(refs, res, 0, _g.ClusterSize, log);
        await CheckL1Async(refs, res, (long)_header.L1TableOffset, _l1.Length, active: true, log, ct).ConfigureAwait(false);
        foreach (var sn in _snapshots)
        {
            if ((sn.L1TableOffset & (ulong)(_g.ClusterSize - 1)) != 0)
            {
                log($"ERROR snapshot {sn.Id} ({sn.Name}) l1_offset={Hex((long)sn.L1TableOffset)}: L1 table is not cluster aligned; snapshot table entry corrupted");
                res.Corruptions++;
                continue;
            }
            if (sn.L1Size > Qcow2Geometry.MaxL1Bytes / 8)
            {
                log($"ERROR snapshot {sn.Id} ({sn.Name}) l1_size={Hex(sn.L1Size)}: L1 table is too large; snapshot table entry corrupted");
                res.Corruptions++;
                continue;
            }
            await CheckL1Async(refs, res, (long)sn.L1TableOffset, (int)sn.L1Size, active: false, log, ct).ConfigureAwait(false);
        }
        Reference(refs, res, (long)_header.SnapshotsOffset, _header.SnapshotCount == 0 ? 0 : Qcow2Snapshot.TableSize(_snapshots), log);
        Reference(refs, res, _refcounts.TableOffset, (long)_refcounts.TableClusters << _g.ClusterBits, log);
        if (CryptoHeaderRange() is { } crypto) Reference(refs, res, crypto.Offset, crypto.Length, log);
        await ReferenceBitmapsAsync(refs, res, log, ct).ConfigureAwait(false);

        bool rebuild = false;
        long fileClusters = _g.SizeToClusters(File.Length);
        var table = _refcounts.Table;
        for (int i = 0; i < table.Length; i++)
        {
            ulong entry = table.Span[i];
            long offset = (long)(entry & Qcow2Refcounts.TableOffsetMask);
            if ((entry & 0x1ff) != 0)
            {
                log($"ERROR refcount table entry {i} has reserved bits set");
                res.Corruptions++;
                rebuild = true;
                continue;
            }
            if (offset == 0) continue;
            if ((offset & (_g.ClusterSize - 1)) != 0)
            {
                log($"ERROR refcount block {i} is not cluster aligned; refcount table entry corrupted");
                res.Corruptions++;
                rebuild = true;
                continue;
            }
            // Unsigned, as in QEMU: an offset with bit 63 set is far outside, not negative.
            long cluster = (long)((ulong)offset >> _g.ClusterBits);
            if ((ulong)offset >> _g.ClusterBits >= (ulong)fileClusters)
            {
                res.Corruptions++;
                bool repair = (fix & RepairMode.Errors) != 0;
                log($"{(repair ? "Repairing" : "ERROR")} refcount block {i} is outside image");
                if (!repair) continue;
                // check_refblocks: the file grows to cover the block, which then counts as referenced.
                try
                {
                    if (offset < 0 || offset > long.MaxValue - _g.ClusterSize)
                        throw new NativeIOException(Errno.EINVAL, NativeIOException.Describe(Errno.EINVAL), Filename);
                    try
                    {
                        await File.TruncateAsync(offset + _g.ClusterSize, ct).ConfigureAwait(false);
                    }
                    catch (NativeIOException e)
                    {
                        Diagnostics.Error($"Could not resize file: {NativeIOException.Describe(e.Errno)}");
                        throw;
                    }
                    fileClusters = _g.SizeToClusters(File.Length);
                    if (cluster >= fileClusters) throw new NativeIOException(Errno.EINVAL, NativeIOException.Describe(Errno.EINVAL), Filename);
                    res.Corruptions--;
                    res.CorruptionsFixed++;
                    Reference(refs, res, offset, _g.ClusterSize, log);
                }
                catch (NativeIOException e)
                {
                    rebuild = true;
                    log($"ERROR could not resize image: {NativeIOException.Describe(e.Errno)}");
                }
                continue;
            }
            Reference(refs, res, offset, _g.ClusterSize, log);
            if (refs[cluster] != 1)
            {
                log($"ERROR refcount block {i} refcount={refs[cluster]}");
                res.Corruptions++;
                rebuild = true;
            }
        }
        return (refs, rebuild);
    }

    /// <summary>check_refcounts_l1: the L1 table as on disk, its L2 tables and what they reference.</summary>
    private async Task CheckL1Async(ReferenceMap refs, ImageCheck res, long l1Offset, int l1Size, bool active, Action<string> log, CancellationToken ct)
    {
        if (l1Size == 0) return;
        Reference(refs, res, l1Offset, l1Size * 8L, log);
        ulong[] l1;
        try
        {
            l1 = await ReadTableEntriesAsync(File, l1Offset, l1Size, "Could not read L1 table", ct).ConfigureAwait(false);
        }
        catch (NativeIOException e)
        {
            log("ERROR: I/O error in check_refcounts_l1");
            res.CheckErrors++;
            throw new ImageCheckException(e.Errno, e.Message);
        }
        var l2 = new byte[_g.ClusterSize];
        for (int i = 0; i < l1.Length; i++)
        {
            if (l1[i] == 0) continue;
            if ((l1[i] & L1ReservedMask) != 0)
            {
                log($"ERROR found L1 entry with reserved bits set: {l1[i]:x}");
                res.Corruptions++;
            }
            long l2Offset = (long)(l1[i] & L2Entry.OffsetMask);
            Reference(refs, res, l2Offset, _g.ClusterSize, log);
            bool aligned = (l2Offset & (_g.ClusterSize - 1)) == 0;
            if (!aligned)
            {
                log($"ERROR l2_offset={l2Offset:x}: Table is not cluster aligned; L1 entry corrupted");
                res.Corruptions++;
            }
            // Like QEMU, a misaligned table is still read where it points and its entries checked.
            var cached = aligned ? _l2Cache.Peek(l2Offset) : null;
            if (cached is not null) cached.Data.CopyTo(l2, 0);
            else
            {
                try
                {
                    await File.ReadAsync(l2Offset, l2, ct).ConfigureAwait(false);
                }
                catch (NativeIOException e)
                {
                    log("ERROR: I/O error in check_refcounts_l2");
                    res.CheckErrors++;
                    throw new ImageCheckException(e.Errno, NativeIOException.Describe(e.Errno));
                }
            }
            await CheckL2Async(refs, res, l2Offset, l2, active, log).ConfigureAwait(false);
        }
    }

    /// <summary>L1E_RESERVED_MASK: bits 0-8 and 56-62 of an L1 entry.</summary>
    private const ulong L1ReservedMask = 0x7f000000000001ffUL;

    /// <summary>check_refcounts_l2: each entry's reserved bits, alignment and references.</summary>
    private async Task CheckL2Async(ReferenceMap refs, ImageCheck res, long l2Offset, byte[] l2, bool active, Action<string> log)
    {
        long nextContiguous = 0;
        for (int j = 0; j < _g.L2Entries; j++)
        {
            var e = new L2Entry(BinaryPrimitives.ReadUInt64BigEndian(l2.AsSpan(j * 8)));
            var kind = KindOf(e);
            if (kind != Qcow2ClusterKind.Compressed && (e.Raw & L2Entry.ReservedMask) != 0)
            {
                log($"ERROR found l2 entry with reserved bits set: {e.Raw:x}");
                res.Corruptions++;
            }
            switch (kind)
            {
                case Qcow2ClusterKind.Compressed:
                    if (e.IsCopied)
                    {
                        log($"ERROR: coffset=0x{e.CompressedHostOffset(_g):x}: copied flag must never be set for compressed clusters");
                        res.Corruptions++;
                    }
                    // qcow2_parse_compressed_l2_entry: from the byte offset to the end of its last sector.
                    long coffset = e.CompressedHostOffset(_g);
                    Reference(refs, res, coffset, e.CompressedSectors(_g) * 512L - (coffset & 511), log);
                    if (active)
                    {
                        res.AllocatedClusters++;
                        res.CompressedClusters++;
                        res.FragmentedClusters++;
                    }
                    break;
                case Qcow2ClusterKind.Normal:
                case Qcow2ClusterKind.ZeroAllocated:
                    long offset = e.HostOffset;
                    if ((offset & (_g.ClusterSize - 1)) != 0)
                    {
                        res.Corruptions++;
                        if (kind == Qcow2ClusterKind.ZeroAllocated)
                        {
                            bool repair = (_fixing & RepairMode.Errors) != 0;
                            log($"{(repair ? "Repairing" : "ERROR")} offset={offset:x}: Preallocated cluster is not properly aligned; L2 entry corrupted.");
                            // fix_l2_entry_by_zero: a preallocated zero cluster holds no data, so it can become a plain zero cluster.
                            if (repair && await FixEntryByZeroAsync(l2Offset, l2, j, res, log).ConfigureAwait(false))
                            {
                                res.Corruptions--;
                                res.CorruptionsFixed++;
                                continue;
                            }
                        }
                        else
                        {
                            log($"ERROR offset={offset:x}: Data cluster is not properly aligned; L2 entry corrupted.");
                        }
                    }
                    if (active)
                    {
                        res.AllocatedClusters++;
                        if (nextContiguous != 0 && offset != nextContiguous) res.FragmentedClusters++;
                        nextContiguous = offset + _g.ClusterSize;
                    }
                    // Clusters in an external data file are not counted in the image's refcounts.
                    if (!HasExternalDataFile) Reference(refs, res, offset, _g.ClusterSize, log);
                    break;
            }
        }
    }

    /// <summary>The repair mode of the check under way (CheckL2Async repairs as it goes, as QEMU's does).</summary>
    private RepairMode _fixing;

    /// <summary>Rewrites one L2 entry as a plain zero cluster, on disk and in the cache; false when it could not.</summary>
    private async Task<bool> FixEntryByZeroAsync(long l2Offset, byte[] l2, int index, ImageCheck res, Action<string> log)
    {
        if (IsReadOnly || (l2Offset & (_g.ClusterSize - 1)) != 0) return false;
        BinaryPrimitives.WriteUInt64BigEndian(l2.AsSpan(index * 8), L2Entry.ZeroFlag);
        try
        {
            await File.WriteAsync(l2Offset + index * 8L, l2.AsMemory(index * 8, 8)).ConfigureAwait(false);
            await SyncFileAsync().ConfigureAwait(false);
        }
        catch (NativeIOException e)
        {
            log($"ERROR: Failed to overwrite L2 table entry: {NativeIOException.Describe(e.Errno)}");
            res.CheckErrors++;
            return false;
        }
        if (_l2Cache.Peek(l2Offset) is { } cached) BinaryPrimitives.WriteUInt64BigEndian(cached.Data.AsSpan(index * 8), L2Entry.ZeroFlag);
        return true;
    }

    private async Task ReferenceBitmapsAsync(ReferenceMap refs, ImageCheck res, Action<string> log, CancellationToken ct)
    {
        if (_header.Bitmaps is not { } bm || (_header.AutoclearFeatures & Qcow2Features.AutoclearBitmaps) == 0) return;
        if (bm.DirectorySize > 64UL << 20) return;
        var dir = new byte[bm.DirectorySize];
        await File.ReadAsync((long)bm.DirectoryOffset, dir, ct).ConfigureAwait(false);
        Reference(refs, res, (long)bm.DirectoryOffset, dir.Length, log);
        int pos = 0;
        for (uint i = 0; i < bm.Count && pos + 24 <= dir.Length; i++)
        {
            long tableOffset = (long)BinaryPrimitives.ReadUInt64BigEndian(dir.AsSpan(pos));
            uint tableSize = BinaryPrimitives.ReadUInt32BigEndian(dir.AsSpan(pos + 8));
            int nameSize = BinaryPrimitives.ReadUInt16BigEndian(dir.AsSpan(pos + 18));
            uint extra = BinaryPrimitives.ReadUInt32BigEndian(dir.AsSpan(pos + 20));
            pos = (int)((pos + 24 + extra + nameSize + 7) & ~7L);
            if (tableSize > (1u << 24)) continue;
            Reference(refs, res, tableOffset, tableSize * 8L, log);
            var entries = await ReadTableEntriesAsync(File, tableOffset, (int)tableSize, "Could not read bitmap table", ct).ConfigureAwait(false);
            foreach (var e in entries)
            {
                long off = (long)(e & L2Entry.OffsetMask);
                if (off != 0) Reference(refs, res, off, _g.ClusterSize, log);
            }
        }
    }

    /// <summary>compare_refcounts; returns the highest cluster in use by either count.</summary>
    private async Task<long> CompareRefcountsAsync(ReferenceMap refs, ImageCheck res, RepairMode fix, Action<string> log, long fileClusters)
    {
        // QEMU starts from cluster 0, so the image end is at least one cluster even when no count could be read.
        long highest = 0;
        long limit = Math.Max(refs.Count, fileClusters);
        foreach (long i in refs.Indexes().Concat(LongRange(refs.Count, limit)))
        {
            ulong onDisk;
            try
            {
                onDisk = await _refcounts.GetAsync(i).ConfigureAwait(false);
            }
            catch (NativeIOException e)
            {
                if (e.Errno == Errno.EIO && e.Message != NativeIOException.Describe(Errno.EIO)) await ReportCorruptionAsync(e.Message).ConfigureAwait(false);
                log($"Can't get refcount for cluster {i}: {NativeIOException.Describe(e.Errno)}");
                res.CheckErrors++;
                continue;
            }
            ulong computed = refs[i];
            if (onDisk > 0 || computed > 0) highest = Math.Max(highest, i);
            if (onDisk == computed) continue;
            bool canFix = false;
            if (onDisk == 0) _rebuildNeeded = true;
            else if (onDisk > computed && (fix & RepairMode.Leaks) != 0) canFix = true;
            else if (onDisk < computed && (fix & RepairMode.Errors) != 0) canFix = true;
            string what = canFix ? "Repairing" : onDisk < computed ? "ERROR" : "Leaked";
            log($"{what} cluster {i} refcount={onDisk} reference={computed}");
            if (canFix)
            {
                await _refcounts.SetAsync(i, computed).ConfigureAwait(false);
                if (computed == 0 && i < _refcounts.FreeHint) _refcounts.FreeHint = i;
                if (onDisk > computed) res.LeaksFixed++;
                else res.CorruptionsFixed++;
                continue;
            }
            if (onDisk < computed) res.Corruptions++;
            else res.Leaks++;
        }
        return highest;
    }

    private static IEnumerable<long> LongRange(long from, long to)
    {
        for (long i = from; i < to; i++) yield return i;
    }

    /// <summary>check_oflag_copied: COPIED must be set exactly when the refcount is 1 (active tables only).</summary>
    private async Task CheckCopiedFlagsAsync(ImageCheck res, RepairMode fix, Action<string> log)
    {
        // -r leaks repairs the flags too when the refcounts came out right: they run after the
        // refcount repair, so the counts are then accurate.
        bool repair = !IsReadOnly && ((fix & RepairMode.Errors) != 0
            || ((fix & RepairMode.Leaks) != 0 && res.CheckErrors == 0 && res.Corruptions == 0 && res.Leaks == 0));
        for (int i = 0; i < _l1.Length; i++)
        {
            ulong l1Entry = _l1[i];
            long l2Offset = (long)(l1Entry & L2Entry.OffsetMask);
            if (l2Offset == 0) continue;
            // A refcount that cannot be read was reported by the comparison already (QEMU stays silent here too).
            if (await TryGetRefcountAsync(l2Offset >> _g.ClusterBits).ConfigureAwait(false) is not ulong refcount) continue;
            bool aligned = (l2Offset & (_g.ClusterSize - 1)) == 0;
            if ((refcount == 1) != ((l1Entry & L2Entry.CopiedFlag) != 0))
            {
                res.Corruptions++;
                log($"{(repair ? "Repairing" : "ERROR")} OFLAG_COPIED L2 cluster: l1_index={i} l1_entry={l1Entry:x} refcount={refcount}");
                if (repair)
                {
                    _l1[i] = refcount == 1 ? l1Entry | L2Entry.CopiedFlag : l1Entry & ~L2Entry.CopiedFlag;
                    _l1Dirty = true;
                    res.Corruptions--;
                    res.CorruptionsFixed++;
                }
            }
            CachedTable table;
            if (aligned) table = await _l2Cache.GetAsync(l2Offset).ConfigureAwait(false);
            else
            {
                // A misaligned table is read where it points (never cached, never written back).
                table = new CachedTable(l2Offset, new byte[_g.ClusterSize]);
                await File.ReadAsync(l2Offset, table.Data).ConfigureAwait(false);
            }
            for (int j = 0; j < _g.L2Entries; j++)
            {
                var e = EntryAt(table, j);
                if (KindOf(e) is not (Qcow2ClusterKind.Normal or Qcow2ClusterKind.ZeroAllocated)) continue;
                // check_oflag_copied: a data file cluster counts as referenced once.
                if ((HasExternalDataFile ? 1UL : await TryGetRefcountAsync(e.HostOffset >> _g.ClusterBits).ConfigureAwait(false)) is not ulong rc) continue;
                if ((rc == 1) == e.IsCopied) continue;
                res.Corruptions++;
                log($"{(repair && aligned ? "Repairing" : "ERROR")} OFLAG_COPIED data cluster: l2_entry={e.Raw:x} refcount={rc}");
                if (repair && aligned)
                {
                    SetEntry(table, j, new L2Entry(rc == 1 ? e.Raw | L2Entry.CopiedFlag : e.Raw & ~L2Entry.CopiedFlag));
                    res.Corruptions--;
                    res.CorruptionsFixed++;
                }
            }
        }
    }

    private async ValueTask<ulong?> TryGetRefcountAsync(long cluster)
    {
        try
        {
            return await _refcounts.GetAsync(cluster).ConfigureAwait(false);
        }
        catch (NativeIOException)
        {
            return null;
        }
    }

    /// <summary>What a refcount rebuild has laid out so far: the new table's entries and the clusters the references span.</summary>
    private sealed class RebuildState(long clusters)
    {
        public ulong[] Table = [];
        /// <summary>QEMU's nb_clusters: the in-memory refcounts cover [0, Clusters); allocations past it extend it.</summary>
        public long Clusters = clusters;
    }

    /// <summary>
    /// rebuild_refcount_structure (QEMU 7.1 and later): refcount blocks for every range with
    /// references go into the first free clusters of the computed references and are written at
    /// once; then the table goes into the first free run, and the blocks covering it are written
    /// again (growing the table, and starting over, if they need a new entry). The header points at
    /// the table last. The old structures become leaks that the caller repairs. Placing them as
    /// QEMU does keeps a repaired image's layout (and "Image end offset") the same.
    /// </summary>
    private async Task RebuildRefcountsAsync(ReferenceMap refs, ImageCheck res)
    {
        try
        {
            await RebuildRefcountsCoreAsync(refs).ConfigureAwait(false);
        }
        catch (RebuildException e)
        {
            // qcow2_check_refcounts reports the step that failed (error_report_err), then fails the check.
            res.CheckErrors++;
            Diagnostics.Error($"{e.Step}: {NativeIOException.Describe(e.Errno)}");
            throw new NativeIOException(e.Errno, NativeIOException.Describe(e.Errno), Filename);
        }
    }

    /// <summary>A rebuild step that failed, named as QEMU names it ("ERROR writing refblock").</summary>
    private sealed class RebuildException(string step, int errno) : Exception(step)
    {
        public string Step { get; } = step;
        public int Errno { get; } = errno;
    }

    private static async Task RebuildStepAsync(string step, Func<Task> action)
    {
        try
        {
            await action().ConfigureAwait(false);
        }
        catch (NativeIOException e)
        {
            throw new RebuildException(step, e.Errno);
        }
    }

    private async Task RebuildRefcountsCoreAsync(ReferenceMap refs)
    {
        var state = new RebuildState(refs.Count);
        await WriteRebuiltBlocksAsync(refs, state, 0, state.Clusters).ConfigureAwait(false);
        long tableOffset, tableClusters, tableBytes;
        bool grown;
        do
        {
            long firstFree = 0;
            tableBytes = state.Table.LongLength * 8;
            tableClusters = _g.SizeToClusters(tableBytes);
            tableOffset = AllocateInReferences(refs, state, tableClusters, ref firstFree);
            long first = tableOffset >> _g.ClusterBits;
            grown = await WriteRebuiltBlocksAsync(refs, state, first, first + tableClusters).ConfigureAwait(false);
        }
        while (grown);

        var raw = SerializeTable(state.Table, state.Table.Length);
        await RebuildStepAsync("ERROR writing reftable", async () =>
        {
            await CheckMetadataOverlapAsync(tableOffset, tableBytes).ConfigureAwait(false);
            await File.WriteAsync(tableOffset, raw).ConfigureAwait(false);
            // The new structures are durable before the header points at them (QEMU syncs only the header).
            await SyncFileAsync().ConfigureAwait(false);
        }).ConfigureAwait(false);
        await RebuildStepAsync("ERROR setting reftable", async () =>
        {
            await WriteRefcountTablePointerAsync(tableOffset, (int)tableClusters).ConfigureAwait(false);
            await SyncFileAsync().ConfigureAwait(false);
        }).ConfigureAwait(false);
        _refcounts.ReplaceTable(state.Table, tableOffset, (int)tableClusters, state.Clusters);
    }

    /// <summary>
    /// rebuild_refcounts_write_refblocks: for each refcount block range in [<paramref name="first"/>,
    /// <paramref name="end"/>) with a referenced cluster, writes its block (allocated first if the
    /// new table has none). Returns true when the table had to grow.
    /// </summary>
    private async Task<bool> WriteRebuiltBlocksAsync(ReferenceMap refs, RebuildState state, long first, long end)
    {
        long perBlock = _g.RefcountBlockEntries;
        long firstFree = 0;
        bool grown = false;
        var block = new byte[_g.ClusterSize];
        for (long c = first; c < end; c++)
        {
            if (refs[c] == 0) continue;
            long index = c / perBlock, blockStart = index * perBlock;
            long blockOffset;
            if (index < state.Table.LongLength && state.Table[index] != 0)
            {
                blockOffset = (long)state.Table[index];
            }
            else
            {
                // Not in a block already written.
                if (firstFree < blockStart) firstFree = blockStart;
                blockOffset = AllocateInReferences(refs, state, 1, ref firstFree);
                if (blockOffset >> _g.ClusterBits >= end) end = (blockOffset >> _g.ClusterBits) + 1;
                if (index >= state.Table.LongLength)
                {
                    long entriesPerCluster = _g.ClusterSize / 8;
                    var table = new ulong[(index + 1 + entriesPerCluster - 1) / entriesPerCluster * entriesPerCluster];
                    Array.Copy(state.Table, table, state.Table.Length);
                    state.Table = table;
                    grown = true;
                }
                state.Table[index] = (ulong)blockOffset;
            }
            Array.Clear(block);
            for (long k = 0; k < perBlock; k++)
            {
                ulong v = refs[blockStart + k];
                if (v != 0) RefcountCodec.Set(block, k, _g.RefcountOrder, Math.Min(v, _g.RefcountMax));
            }
            await RebuildStepAsync("ERROR writing refblock", async () =>
            {
                await CheckMetadataOverlapAsync(blockOffset, _g.ClusterSize).ConfigureAwait(false);
                await File.WriteAsync(blockOffset, block).ConfigureAwait(false);
            }).ConfigureAwait(false);
            c = blockStart + perBlock - 1;
        }
        return grown;
    }

    /// <summary>
    /// alloc_clusters_imrt: the first run of <paramref name="count"/> clusters without references
    /// at or after <paramref name="firstFree"/> (which moves to the first free cluster seen),
    /// past the end if none; they get a reference. Returns its offset.
    /// </summary>
    private long AllocateInReferences(ReferenceMap refs, RebuildState state, long count, ref long firstFree)
    {
        long cluster = firstFree, contiguous = 0;
        bool firstGap = true;
        for (; cluster < state.Clusters && contiguous < count; cluster++)
        {
            if (refs[cluster] == 0)
            {
                contiguous++;
                if (firstGap)
                {
                    firstFree = cluster;
                    firstGap = false;
                }
            }
            else
            {
                contiguous = 0;
            }
        }
        if (contiguous < count) state.Clusters = cluster + count - contiguous;
        cluster -= contiguous;
        for (long i = 0; i < count; i++) refs[cluster + i] = 1;
        return cluster << _g.ClusterBits;
    }
}
