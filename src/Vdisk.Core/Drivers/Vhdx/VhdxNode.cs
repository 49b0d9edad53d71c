using System.Buffers.Binary;
using System.Numerics;
using Vdisk.Graph;
using Vdisk.Native;
using Vdisk.Permissions;

namespace Vdisk.Drivers.Vhdx;

/// <summary>
/// The <c>vhdx</c> format (Hyper-V), as QEMU 7.2's block/vhdx.c: dynamic and fixed disks (not
/// differencing ones, which QEMU refuses). Payload blocks map through the BAT; blocks that are
/// not present, undefined, zero or unmapped read as zeroes, partially present ones fail. A
/// write to a block without data appends a new block at the end of the file (1 MiB aligned),
/// writes the data, and then changes the BAT entry through the log: the entry is journaled,
/// flushed, applied and the log emptied again, so a crash leaves either the old entry or a log
/// that the next read-write open replays. A log found at open is replayed, or the open is
/// refused read-only with QEMU's message.
/// </summary>
public sealed partial class VhdxNode : BlockNode, IImageInfoSource
{
    private const long Sector = 512;

    private readonly BdrvChild _fileChild;
    private readonly VhdxHeaders _headers;
    private readonly List<(ulong Start, ulong End)> _regions;
    private readonly ulong[] _bat;
    private readonly long _batOffset;
    private readonly uint _batEntries;
    private readonly long _blockSize;
    private readonly long _length;
    private readonly long _chunkRatio;
    private readonly int _chunkRatioBits;
    private readonly int _sectorsPerBlockBits;
    private readonly VhdxLog _log;
    private readonly SemaphoreSlim _lock = new(1, 1);

    private VhdxNode(string nodeName, NodeFlags flags, BlockNode file, OpenState s)
        : base(nodeName, flags, file.Filename)
    {
        _headers = s.HeaderWriter;
        _regions = s.Regions;
        _bat = s.Bat;
        _batOffset = (long)s.BatRegion.FileOffset;
        _batEntries = s.BatEntries;
        _blockSize = s.BlockSize;
        _length = s.Length;
        _chunkRatio = s.ChunkRatio;
        _chunkRatioBits = BitOperations.TrailingZeroCount((ulong)s.ChunkRatio);
        _sectorsPerBlockBits = BitOperations.TrailingZeroCount((ulong)(s.BlockSize / Sector));
        _log = s.Log;
        LogReplayedOnOpen = s.LogReplayed;
        IsFixedFile = s.LeaveBlocksAllocated;
        _fileChild = AttachChild("file", file, ChildRole.Image);
    }

    /// <inheritdoc />
    public override string DriverName => "vhdx";

    /// <inheritdoc />
    public override bool IsProtocol => false;

    /// <inheritdoc />
    public override IChildPermissionRule PermissionRule => DefaultChildPermissionRule.Instance;

    /// <summary>The file child's node.</summary>
    public BlockNode File => _fileChild.Node;

    /// <inheritdoc />
    public override long Length => _length;

    /// <inheritdoc />
    /// <remarks>
    /// vhdx_has_zero_init: a new dynamic disk has no block present; a new fixed one (first block
    /// fully present) reads what its file reads.
    /// </remarks>
    public override bool HasZeroInit =>
        _batEntries == 0 || VhdxBat.State(_bat[0]) != VhdxBlockState.FullyPresent || File.HasZeroInit;

    /// <summary>Payload block size.</summary>
    public long BlockSize => _blockSize;

    /// <summary>True when the open found a log and replayed it (check then counts one corruption fixed).</summary>
    public bool LogReplayedOnOpen { get; }

    /// <summary>The file parameters say "leave blocks allocated": a fixed disk.</summary>
    public bool IsFixedFile { get; }

    /// <summary>The BAT entries in memory (payload and sector-bitmap entries interleaved).</summary>
    internal ReadOnlySpan<ulong> Bat => _bat.AsSpan(0, (int)_batEntries);

    /// <summary>What an open learns, handed to the constructor.</summary>
    private sealed class OpenState
    {
        public required VhdxHeader[] Headers;
        public int Current;
        public VhdxHeaders HeaderWriter = null!;
        public required List<(ulong Start, ulong End)> Regions;
        public VhdxLog Log = null!;
        public bool LogReplayed;
        public VhdxRegion BatRegion;
        public VhdxRegion MetadataRegion;
        public ulong[] Bat = [];
        public uint BatEntries;
        public long BlockSize;
        public long Length;
        public long ChunkRatio;
        public bool LeaveBlocksAllocated;
    }

    /// <summary>
    /// Opens the image on <paramref name="file"/> with vhdx_open's steps and messages: file
    /// identifier, headers, log (replayed read-write, refused read-only), region table,
    /// metadata, BAT, and (unless <paramref name="check"/>) the BAT entries against the file's size.
    /// </summary>
    public static async Task<VhdxNode> OpenAsync(string nodeName, NodeFlags flags, BlockNode file, bool check, CancellationToken ct = default)
    {
        var signature = new byte[8];
        await ReadOrFailAsync(file, 0, signature, ct).ConfigureAwait(false);
        if (!signature.AsSpan().SequenceEqual(VhdxLayout.FileSignature)) throw FormatIo.OpenError(file, Errno.EINVAL);

        var s = new OpenState { Headers = new VhdxHeader[2], Regions = new() };
        await ParseHeadersAsync(file, s, ct).ConfigureAwait(false);
        // The file-write GUID of this session, written with the first header update.
        s.HeaderWriter = new VhdxHeaders(file, s.Headers, s.Current, Guid.NewGuid());
        s.Log = new VhdxLog(s.Headers[s.Current].LogOffset, s.Headers[s.Current].LogLength);
        bool writable = (flags & NodeFlags.ReadWrite) != 0;
        var replay = await VhdxLog.ParseAsync(file, s.Headers[s.Current], s.Log, ct).ConfigureAwait(false);
        if (replay is not null)
        {
            // The spec wants the log replayed before the file is used, even for reading.
            if (!writable)
                throw new NativeIOException(Errno.EPERM,
                    $"VHDX image file '{file.Filename}' opened read-only, but contains a log that needs to be replayed\n" +
                    $"To replay the log, run:\nqemu-img check -r all '{file.Filename}'", file.Filename);
            await s.Log.ReplayAsync(file, replay, s.HeaderWriter, ct).ConfigureAwait(false);
            s.LogReplayed = true;
        }
        await OpenRegionTableAsync(file, s, ct).ConfigureAwait(false);
        await ParseMetadataAsync(file, s, ct).ConfigureAwait(false);

        s.BatEntries = VhdxLayout.BatEntries((ulong)s.Length, (uint)s.BlockSize, out _);
        if (s.BatEntries > s.BatRegion.Length / 8) throw FormatIo.OpenError(file, Errno.EINVAL);
        var batBytes = new byte[s.BatRegion.Length];
        await ReadOrFailAsync(file, (long)s.BatRegion.FileOffset, batBytes, ct).ConfigureAwait(false);
        s.Bat = new ulong[batBytes.Length / 8];
        for (int i = 0; i < s.Bat.Length; i++) s.Bat[i] = BinaryPrimitives.ReadUInt64LittleEndian(batBytes.AsSpan(i * 8));

        var node = new VhdxNode(nodeName, flags, file, s);
        if (!check)
        {
            try
            {
                if (node.CheckBatEntries(Diagnostics.Error, stopAtFirst: true) > 0) throw FormatIo.OpenError(file, Errno.EINVAL);
            }
            catch
            {
                node.DetachChild(node._fileChild);
                throw;
            }
        }
        return node;
    }

    private static async ValueTask ReadOrFailAsync(BlockNode file, long offset, Memory<byte> buffer, CancellationToken ct)
    {
        try
        {
            await FormatIo.ReadAsync(file, offset, buffer, ct).ConfigureAwait(false);
        }
        catch (NativeIOException e)
        {
            throw FormatIo.OpenError(file, e.Errno);
        }
    }

    /// <summary>vhdx_parse_header: the valid header with the higher sequence number (equal ones only if identical).</summary>
    private static async ValueTask ParseHeadersAsync(BlockNode file, OpenState s, CancellationToken ct)
    {
        var block = new byte[VhdxLayout.HeaderChecksumSize];
        bool[] valid = new bool[2];
        for (int i = 0; i < 2; i++)
        {
            await ReadOrFailAsync(file, i == 0 ? VhdxLayout.Header1Offset : VhdxLayout.Header2Offset, block, ct).ConfigureAwait(false);
            s.Headers[i] = VhdxHeader.Parse(block);
            valid[i] = Crc32C.IsValid(block, 4) && s.Headers[i].Signature == VhdxHeader.SignatureValue && s.Headers[i].Version == 1;
        }
        if (valid[0] && !valid[1]) s.Current = 0;
        else if (!valid[0] && valid[1]) s.Current = 1;
        else if (!valid[0]) throw NoValidHeader(file);
        else if (s.Headers[0].SequenceNumber > s.Headers[1].SequenceNumber) s.Current = 0;
        else if (s.Headers[1].SequenceNumber > s.Headers[0].SequenceNumber) s.Current = 1;
        // Disk2VHD writes two identical headers with the same sequence number.
        else if (s.Headers[0].Fields.AsSpan().SequenceEqual(s.Headers[1].Fields)) s.Current = 0;
        else throw NoValidHeader(file);
        var current = s.Headers[s.Current];
        s.Regions.Add((current.LogOffset, unchecked(current.LogOffset + current.LogLength)));
    }

    private static NativeIOException NoValidHeader(BlockNode file) => new(Errno.EINVAL, "No valid VHDX header found", file.Filename);

    /// <summary>vhdx_region_check: an overlap with a known region is reported (error_report) and fails.</summary>
    private static bool Overlaps(List<(ulong Start, ulong End)> regions, ulong start, ulong length, Action<string> report)
    {
        ulong end = unchecked(start + length);
        foreach (var (rs, re) in Enumerable.Reverse(regions))
        {
            if (!(start >= re || end <= rs))
            {
                // QEMU's format ends in "%." PRIu64: a precision of zero, so an end of 0 prints nothing.
                report($"VHDX region {start}-{end} overlaps with region {rs}-{(re == 0 ? "" : re.ToString(System.Globalization.CultureInfo.InvariantCulture))}");
                return true;
            }
        }
        return false;
    }

    /// <summary>vhdx_open_region_tables: the first region table, checksummed, with a unique BAT and metadata region.</summary>
    private static async ValueTask OpenRegionTableAsync(BlockNode file, OpenState s, CancellationToken ct)
    {
        var table = new byte[VhdxLayout.HeaderBlockSize];
        await ReadOrFailAsync(file, VhdxLayout.RegionTableOffset, table, ct).ConfigureAwait(false);
        if (!Crc32C.IsValid(table, 4)) throw FormatIo.OpenError(file, Errno.EINVAL);
        if (BinaryPrimitives.ReadUInt32LittleEndian(table) != 0x69676572) throw FormatIo.OpenError(file, Errno.EINVAL);
        uint count = BinaryPrimitives.ReadUInt32LittleEndian(table.AsSpan(8));
        if (count > 2047) throw FormatIo.OpenError(file, Errno.EINVAL);
        bool batFound = false, metadataFound = false;
        for (int i = 0; i < count; i++)
        {
            var entry = VhdxRegion.Read(table.AsSpan(16 + i * 32));
            if (Overlaps(s.Regions, entry.FileOffset, entry.Length, Diagnostics.Error)) throw FormatIo.OpenError(file, Errno.EINVAL);
            s.Regions.Add((entry.FileOffset, unchecked(entry.FileOffset + entry.Length)));
            if (entry.Guid == VhdxLayout.BatGuid)
            {
                if (batFound) throw FormatIo.OpenError(file, Errno.EINVAL);
                batFound = true;
                s.BatRegion = entry;
            }
            else if (entry.Guid == VhdxLayout.MetadataGuid)
            {
                if (metadataFound) throw FormatIo.OpenError(file, Errno.EINVAL);
                metadataFound = true;
                s.MetadataRegion = entry;
            }
            else if (entry.Required)
            {
                // A required region this reader does not know: the spec says the file must not be opened.
                throw FormatIo.OpenError(file, Errno.ENOTSUP);
            }
        }
        if (!batFound || !metadataFound) throw FormatIo.OpenError(file, Errno.EINVAL);
    }

    /// <summary>vhdx_parse_metadata: the five required items, each once; differencing disks are not supported.</summary>
    private static async ValueTask ParseMetadataAsync(BlockNode file, OpenState s, CancellationToken ct)
    {
        long regionAt = (long)Math.Min(s.MetadataRegion.FileOffset, long.MaxValue);
        var table = new byte[VhdxLayout.HeaderBlockSize];
        await ReadOrFailAsync(file, regionAt, table, ct).ConfigureAwait(false);
        if (BinaryPrimitives.ReadUInt64LittleEndian(table) != 0x617461646174656DUL) throw FormatIo.OpenError(file, Errno.EINVAL);
        int count = BinaryPrimitives.ReadUInt16LittleEndian(table.AsSpan(10));
        if (count * 32 > table.Length - 32) throw FormatIo.OpenError(file, Errno.EINVAL);
        var found = new Dictionary<Guid, VhdxMetadataEntry>();
        Guid[] known = [VhdxLayout.FileParametersGuid, VhdxLayout.VirtualSizeGuid, VhdxLayout.Page83Guid,
            VhdxLayout.LogicalSectorGuid, VhdxLayout.PhysicalSectorGuid, VhdxLayout.ParentLocatorGuid];
        for (int i = 0; i < count; i++)
        {
            var entry = VhdxMetadataEntry.Read(table.AsSpan(32 + i * 32));
            if (known.Contains(entry.ItemId))
            {
                if (!found.TryAdd(entry.ItemId, entry)) throw FormatIo.OpenError(file, Errno.EINVAL);
            }
            else if ((entry.Flags & VhdxMetadataEntry.IsRequired) != 0)
            {
                throw FormatIo.OpenError(file, Errno.ENOTSUP);
            }
        }
        // All five required items and no parent locator: QEMU 7.2 has no differencing support.
        if (found.Count != 5 || found.ContainsKey(VhdxLayout.ParentLocatorGuid)) throw FormatIo.OpenError(file, Errno.ENOTSUP);

        async ValueTask<byte[]> Item(Guid id, int length)
        {
            var bytes = new byte[length];
            await ReadOrFailAsync(file, regionAt + found[id].Offset, bytes, ct).ConfigureAwait(false);
            return bytes;
        }
        var parameters = await Item(VhdxLayout.FileParametersGuid, 8).ConfigureAwait(false);
        uint blockSize = BinaryPrimitives.ReadUInt32LittleEndian(parameters);
        uint dataBits = BinaryPrimitives.ReadUInt32LittleEndian(parameters.AsSpan(4));
        // has_parent without a parent locator is an invalid combination (with one, the count check failed).
        if ((dataBits & 2) != 0) throw FormatIo.OpenError(file, Errno.EINVAL);
        ulong virtualSize = BinaryPrimitives.ReadUInt64LittleEndian(await Item(VhdxLayout.VirtualSizeGuid, 8).ConfigureAwait(false));
        uint logicalSector = BinaryPrimitives.ReadUInt32LittleEndian(await Item(VhdxLayout.LogicalSectorGuid, 4).ConfigureAwait(false));
        await Item(VhdxLayout.PhysicalSectorGuid, 4).ConfigureAwait(false);
        if (blockSize < VhdxLayout.MinBlockSize || blockSize > VhdxLayout.MaxBlockSize) throw FormatIo.OpenError(file, Errno.EINVAL);
        if (logicalSector != 512) throw FormatIo.OpenError(file, Errno.ENOTSUP);
        if ((blockSize & (blockSize - 1)) != 0) throw FormatIo.OpenError(file, Errno.EINVAL);
        s.BlockSize = blockSize;
        s.ChunkRatio = VhdxLayout.MaxSectorsPerBlock * 512 / blockSize;
        s.LeaveBlocksAllocated = (dataBits & 1) != 0;
        // The virtual size counts whole logical sectors.
        s.Length = (long)Math.Min(virtualSize >> 9, (ulong)long.MaxValue >> 9) << 9;
    }

    /// <summary>
    /// vhdx_check_bat_entries: every fully present block must start and end inside the file and
    /// must not overlap a region. Each problem is an error_report line through
    /// <paramref name="report"/>; returns the number of problems (the first only with
    /// <paramref name="stopAtFirst"/>, as at open time).
    /// </summary>
    internal int CheckBatEntries(Action<string> report, bool stopAtFirst)
    {
        long fileSize = File.Length;
        long payblocks = _chunkRatio;
        int errors = 0;
        for (uint i = 0; i < _batEntries; i++)
        {
            ulong entry = _bat[i];
            if (VhdxBat.State(entry) != VhdxBlockState.FullyPresent) continue;
            ulong offset = VhdxBat.Offset(entry);
            // QEMU measures the last block by the BAT index (sector-bitmap entries included) and
            // keeps the result in 32 bits; the same arithmetic gives the same verdicts.
            uint blockLength = (uint)Math.Min((ulong)_blockSize, unchecked((ulong)_length - (ulong)i * (ulong)_blockSize));
            if (offset > (ulong)(long.MaxValue - _blockSize))
            {
                report($"VHDX BAT entry {i} offset overflow.");
                if (stopAtFirst) return 1;
                errors++;
            }
            if (offset >= (ulong)fileSize)
            {
                report($"VHDX BAT entry {i} start offset {offset} points after end of file ({fileSize}). Image has probably been truncated.");
                if (stopAtFirst) return 1;
                errors++;
            }
            else if (unchecked(offset + blockLength) > (ulong)fileSize)
            {
                report($"VHDX BAT entry {i} end offset {unchecked(offset + blockLength - 1)} points after end of file ({fileSize}). Image has probably been truncated.");
                if (stopAtFirst) return 1;
                errors++;
            }
            if (payblocks-- != 0)
            {
                if (Overlaps(_regions, offset, (ulong)_blockSize, report))
                {
                    if (stopAtFirst) return 1;
                    errors++;
                }
            }
            else
            {
                payblocks = _chunkRatio;
            }
        }
        return errors;
    }

    /// <summary>vhdx_block_translate: the BAT index of a sector (sector-bitmap entries skipped) and its byte offset in the block.</summary>
    private (uint BatIndex, long InBlock) Translate(long offset)
    {
        long block = offset >> (_sectorsPerBlockBits + 9);
        long inBlock = offset - (block << (_sectorsPerBlockBits + 9));
        return ((uint)(block + (block >> _chunkRatioBits)), inBlock);
    }

    /// <inheritdoc />
    public override async ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        // QEMU's vhdx works in 512-byte sectors; the block layer rounds other requests out.
        long start = offset & ~(Sector - 1);
        long end = (offset + buffer.Length + Sector - 1) & ~(Sector - 1);
        if (start == offset && end == offset + buffer.Length)
        {
            await ReadAlignedAsync(offset, buffer, cancellationToken).ConfigureAwait(false);
            return;
        }
        var bounce = new byte[end - start];
        await ReadAlignedAsync(start, bounce, cancellationToken).ConfigureAwait(false);
        bounce.AsSpan((int)(offset - start), buffer.Length).CopyTo(buffer.Span);
    }

    private async ValueTask ReadAlignedAsync(long offset, Memory<byte> buffer, CancellationToken ct)
    {
        while (!buffer.IsEmpty)
        {
            var (index, inBlock) = Translate(offset);
            int n = (int)Math.Min(buffer.Length, _blockSize - inBlock);
            ulong entry = Volatile.Read(ref _bat[index]);
            switch (VhdxBat.State(entry))
            {
                case VhdxBlockState.NotPresent:
                case VhdxBlockState.Undefined:
                case VhdxBlockState.Unmapped:
                case VhdxBlockState.UnmappedV095:
                case VhdxBlockState.Zero:
                    buffer.Span[..n].Clear();
                    break;
                case VhdxBlockState.FullyPresent:
                    await File.ReadAsync((long)VhdxBat.Offset(entry) + inBlock, buffer[..n], ct).ConfigureAwait(false);
                    break;
                default:
                    // Partially present blocks belong to differencing disks, which QEMU cannot read.
                    throw new NativeIOException(Errno.EIO, NativeIOException.Describe(Errno.EIO), Filename);
            }
            offset += n;
            buffer = buffer[n..];
        }
    }

    /// <inheritdoc />
    public override async ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default)
    {
        await _lock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            long start = offset & ~(Sector - 1);
            long end = (offset + data.Length + Sector - 1) & ~(Sector - 1);
            if (start == offset && end == offset + data.Length)
            {
                await WriteAlignedLockedAsync(offset, data, cancellationToken).ConfigureAwait(false);
            }
            else
            {
                // Read-modify-write of the partial sectors, as the block layer does for a
                // sector-based driver (under the lock, so no other write lands in between).
                var bounce = new byte[end - start];
                await ReadAlignedAsync(start, bounce, cancellationToken).ConfigureAwait(false);
                data.Span.CopyTo(bounce.AsSpan((int)(offset - start)));
                await WriteAlignedLockedAsync(start, bounce, cancellationToken).ConfigureAwait(false);
            }
            if ((flags & WriteFlags.Fua) != 0) await File.FlushAsync(cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            _lock.Release();
        }
    }

    /// <summary>vhdx_co_writev, with the node lock held.</summary>
    private async ValueTask WriteAlignedLockedAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken ct)
    {
        await _headers.UserVisibleWriteAsync(ct).ConfigureAwait(false);
        while (!data.IsEmpty)
        {
            var (index, inBlock) = Translate(offset);
            int n = (int)Math.Min(data.Length, _blockSize - inBlock);
            ulong entry = _bat[index];
            switch (VhdxBat.State(entry))
            {
                case VhdxBlockState.Zero:
                case VhdxBlockState.NotPresent:
                case VhdxBlockState.Unmapped:
                case VhdxBlockState.UnmappedV095:
                case VhdxBlockState.Undefined:
                {
                    // A new block at the end of the file, 1 MiB aligned. Growing a regular file
                    // gives zeroes, so the rest of a formerly zero block still reads as zeroes.
                    long blockAt = (File.Length + (1L << 20) - 1) & ~((1L << 20) - 1);
                    await File.TruncateAsync(blockAt + _blockSize, ct).ConfigureAwait(false);
                    ulong newEntry = VhdxBat.Make(VhdxBlockState.FullyPresent, (ulong)blockAt);
                    Volatile.Write(ref _bat[index], newEntry);
                    try
                    {
                        await File.WriteAsync(blockAt + inBlock, data[..n], WriteFlags.None, ct).ConfigureAwait(false);
                    }
                    catch
                    {
                        // Keep the in-memory BAT in step with the file (QEMU's error_bat_restore).
                        Volatile.Write(ref _bat[index], VhdxBat.Make(VhdxBat.State(entry), 0));
                        throw;
                    }
                    var bytes = new byte[8];
                    BinaryPrimitives.WriteUInt64LittleEndian(bytes, newEntry);
                    // The new entry goes through the log: journaled, flushed, applied, log emptied.
                    await _log.WriteAndFlushAsync(File, _headers, bytes, (ulong)(_batOffset + index * 8L), ct).ConfigureAwait(false);
                    break;
                }
                case VhdxBlockState.FullyPresent:
                {
                    long at = (long)VhdxBat.Offset(entry) + inBlock;
                    // A block inside the header section means a broken BAT: refuse (EFAULT) rather than overwrite it.
                    if (at < VhdxLayout.HeaderSectionEnd) throw new NativeIOException(14, NativeIOException.Describe(14), Filename);
                    await File.WriteAsync(at, data[..n], WriteFlags.None, ct).ConfigureAwait(false);
                    break;
                }
                default:
                    throw new NativeIOException(Errno.EIO, NativeIOException.Describe(Errno.EIO), Filename);
            }
            offset += n;
            data = data[n..];
        }
    }

    /// <inheritdoc />
    /// <remarks>
    /// QEMU's vhdx has no block-status callback, so the block layer reports every range as
    /// allocated data without a host offset; so does this node (map and convert see what they see in QEMU).
    /// </remarks>
    public override ValueTask<BlockStatus> GetBlockStatusAsync(long offset, long length, CancellationToken cancellationToken = default)
    {
        length = Math.Min(length, _length - offset);
        if (length <= 0) return ValueTask.FromResult(new BlockStatus(0, BlockStatusFlags.None));
        return ValueTask.FromResult(new BlockStatus(length, BlockStatusFlags.Data | BlockStatusFlags.Allocated));
    }

    /// <summary>
    /// vhdx_co_check: a log replayed at open counts as one corruption fixed; BAT entries that
    /// point past the end of the file or into a region are corruptions (reported as QEMU's
    /// error_report lines, through <see cref="Diagnostics.ErrorSink"/>). vhdx repairs nothing
    /// in the check itself, whatever the mode: its only repair is the log replay at open.
    /// </summary>
    public override Task<ImageCheck> CheckAsync(RepairMode mode, Action<string>? log, CancellationToken cancellationToken = default)
    {
        var result = new ImageCheck();
        if (LogReplayedOnOpen) result.CorruptionsFixed++;
        result.Corruptions += CheckBatEntries(Diagnostics.Error, stopAtFirst: false);
        return Task.FromResult(result);
    }

    /// <inheritdoc />
    public ImageInfo GetImageInfo() => new()
    {
        Filename = Filename,
        Format = DriverName,
        VirtualSize = Length,
        ActualSize = File.AllocatedSize,
        ClusterSize = _blockSize,
    };
}
