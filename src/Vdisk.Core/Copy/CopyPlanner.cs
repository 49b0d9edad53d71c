using Vdisk.Graph;

namespace Vdisk.Copy;

/// <summary>What a copy request does with its range of the target.</summary>
public enum CopySegmentKind
{
    /// <summary>Read the source and write what is not zero.</summary>
    Data,
    /// <summary>The source reads as zeroes: nothing is read; the target is zeroed unless it already reads as zeroes.</summary>
    Zero,
    /// <summary>Left to the target's backing file (-B): not touched.</summary>
    Skip,
}

/// <summary>One copy request: a range of one source and where it lands in the target.</summary>
/// <param name="Sequence">Position in guest order (writes happen in this order unless out-of-order writes are allowed).</param>
/// <param name="Source">Index of the source image.</param>
/// <param name="SourceOffset">Offset in that source.</param>
/// <param name="TargetOffset">Offset in the target.</param>
/// <param name="Length">Bytes (Data requests never exceed the planner's chunk size).</param>
/// <param name="Kind">What to do.</param>
public readonly record struct CopySegment(long Sequence, int Source, long SourceOffset, long TargetOffset, long Length, CopySegmentKind Kind);

/// <summary>
/// Walks the sources in guest order by block status (convert_iteration_sectors): holes and
/// zero ranges become single Zero requests however long, data is cut at chunk boundaries of
/// the target. One status query covers a long extent and is carved into requests, so a
/// sparse raw file costs two lseeks per extent, not per chunk. Not thread-safe: the copier
/// serialises callers.
/// </summary>
public sealed class CopyPlanner
{
    /// <summary>Longest range asked about in one block-status query.</summary>
    private const long StatusQueryLimit = 1L << 30;

    private readonly IReadOnlyList<BlockNode> _sources;
    private readonly long[] _lengths; // read once: a file node's length is a statx call
    private readonly int _chunkSize;
    private readonly int _alignment;
    private readonly bool _topOnly;
    private readonly bool _chunkZeroes;
    private readonly Action<string>? _salvage;
    private int _source;
    private long _position;
    private long _base;
    private long _sequence;
    private long _extentEnd;
    private CopySegmentKind _extentKind;
    private IAsyncEnumerator<Extent>? _extents;
    private long _walkNext;

    /// <summary>
    /// A planner over <paramref name="sources"/> laid end to end. <paramref name="alignment"/>
    /// (the target cluster for compressed output, else 1) widens data and narrows zero ranges
    /// to whole units; <paramref name="topOnly"/> skips what the top layer leaves to its backing file;
    /// <paramref name="chunkZeroes"/> cuts Zero requests at chunk boundaries like data (for
    /// -S 0, where zeroes are written out as data).
    /// </summary>
    /// <paramref name="salvage"/> (--salvage) retries a failed status query on shorter ranges
    /// and takes a sector whose status cannot be read as data, telling it the warning.
    public CopyPlanner(IReadOnlyList<BlockNode> sources, int chunkSize, int alignment = 1, bool topOnly = false, bool chunkZeroes = false,
        Action<string>? salvage = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(chunkSize);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(alignment);
        if (chunkSize % alignment != 0) throw new ArgumentException("The chunk size must be a multiple of the alignment", nameof(chunkSize));
        _sources = sources;
        _lengths = sources.Select(s => s.Length).ToArray();
        _chunkSize = chunkSize;
        _alignment = alignment;
        _topOnly = topOnly;
        _chunkZeroes = chunkZeroes;
        _salvage = salvage;
    }

    /// <summary>Target offset where the next request starts.</summary>
    public long Position => _base + _position;

    /// <summary>The same offset within its source (where qemu-img says a block-status query failed).</summary>
    public long SourcePosition => _position;

    /// <summary>The next request in guest order, or null after the last.</summary>
    public async ValueTask<CopySegment?> NextAsync(CancellationToken cancellationToken = default)
    {
        while (_source < _sources.Count)
        {
            var source = _sources[_source];
            long length = _lengths[_source];
            if (_position >= length)
            {
                _base += length;
                _source++;
                _position = 0;
                _extentEnd = 0;
                if (_extents is not null) await _extents.DisposeAsync().ConfigureAwait(false);
                _extents = null;
                continue;
            }
            if (_position >= _extentEnd) await QueryAsync(source, length, cancellationToken).ConfigureAwait(false);
            var kind = _extentKind;
            long end = _extentEnd;
            if (kind != CopySegmentKind.Data && _alignment > 1)
            {
                // Only whole units may be left out; a partial one is copied as data.
                long alignedEnd = RoundDown(_base + end, _alignment) - _base;
                if (alignedEnd > _position) end = alignedEnd;
                else kind = CopySegmentKind.Data;
            }
            if (kind == CopySegmentKind.Data || (kind == CopySegmentKind.Zero && _chunkZeroes))
            {
                long absolute = _base + _position;
                if (_alignment > 1) end = Math.Max(end, RoundUp(_base + end, _alignment) - _base);
                end = Math.Min(Math.Min(end, length), _position + (_chunkSize - absolute % _chunkSize));
            }
            var segment = new CopySegment(_sequence++, _source, _position, _base + _position, end - _position, kind);
            _position = end;
            return segment;
        }
        return null;
    }

    private async ValueTask QueryAsync(BlockNode source, long length, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        // The walk goes on from where its last extent ended; when alignment moved the position
        // past that, a new walk starts at the position, so every query begins where the old
        // per-query loop began it (and 1 GiB windows stay aligned). The walk is not given this
        // call's token (callers pass different ones): each call checks its own.
        if (_extents is null || _walkNext != _position)
        {
            if (_extents is not null) await _extents.DisposeAsync().ConfigureAwait(false);
            _extents = BlockExtents.WalkAsync(source, _position, length - _position, _topOnly ? ExtentScope.OwnLayer : ExtentScope.Chain, StatusQueryLimit).GetAsyncEnumerator();
        }
        Extent extent;
        try
        {
            if (!await _extents.MoveNextAsync().ConfigureAwait(false)) throw new InvalidOperationException("The block-status walk ended before the source did");
            extent = _extents.Current;
        }
        catch (IOException) when (_salvage is not null)
        {
            await _extents.DisposeAsync().ConfigureAwait(false);
            _extents = null;
            extent = await SalvageQueryAsync(source, length, cancellationToken).ConfigureAwait(false);
        }
        _walkNext = extent.End;
        _extentKind = (extent.Flags & BlockStatusFlags.Zero) != 0 ? CopySegmentKind.Zero
            : (extent.Flags & BlockStatusFlags.Data) != 0 ? CopySegmentKind.Data
            : _topOnly ? CopySegmentKind.Skip
            : CopySegmentKind.Data;
        _extentEnd = extent.End;
    }

    /// <summary>
    /// convert_iteration_sectors with --salvage: the query again over a quarter of the sectors
    /// each time it fails; when even one sector fails, that sector is data (and the read decides).
    /// </summary>
    private async ValueTask<Extent> SalvageQueryAsync(BlockNode source, long length, CancellationToken cancellationToken)
    {
        const long sector = 512;
        long sectors = (Math.Min(length - _position, StatusQueryLimit) + sector - 1) / sector;
        while (true)
        {
            long want = Math.Min(sectors * sector, length - _position);
            try
            {
                var status = _topOnly
                    ? await BlockChain.OwnLayerStatusAsync(source, _position, want, cancellationToken).ConfigureAwait(false)
                    : await BlockChain.StatusAboveAsync(source, _position, want, cancellationToken).ConfigureAwait(false);
                if (status.Length <= 0) throw new Native.NativeIOException(Native.Errno.EIO, BlockExtents.UnexpectedEnd);
                return new Extent(_position, Math.Min(status.Length, want), status.Flags, status.Depth, status.HostOffset, status.HostNode);
            }
            catch (IOException e)
            {
                if (sectors > 1)
                {
                    sectors = (sectors + 3) / 4;
                    continue;
                }
                _salvage!($"error while reading block status at offset {_position}: {Native.NativeIOException.ErrorText(e)}");
                return new Extent(_position, want, BlockStatusFlags.Data);
            }
        }
    }

    private static long RoundDown(long value, int unit) => value - value % unit;

    private static long RoundUp(long value, int unit) => RoundDown(value + unit - 1, unit);
}
