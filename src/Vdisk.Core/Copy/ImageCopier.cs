using System.Runtime.ExceptionServices;
using Vdisk.Graph;

namespace Vdisk.Copy;

/// <summary>How <see cref="ImageCopier"/> copies (qemu-img convert's options).</summary>
public sealed record CopyOptions
{
    /// <summary>The target already reads as zeroes (freshly created, or --target-is-zero): zero ranges are skipped.</summary>
    public bool TargetIsZero { get; init; }

    /// <summary>-c: write data as compressed clusters (qcow2 targets).</summary>
    public bool Compress { get; init; }

    /// <summary>
    /// -S: aligned runs of this many zero bytes in data become holes. 0 writes every byte,
    /// zero ranges included, so the target ends up fully allocated (as with qemu-img).
    /// </summary>
    public long MinSparse { get; init; } = 4096;

    /// <summary>-B: copy only what the sources' top layer allocates; the rest stays with the target's backing file.</summary>
    public bool TopOnly { get; init; }

    /// <summary>-m: requests in flight (each with its own buffer).</summary>
    public int Parallel { get; init; } = 8;

    /// <summary>-W: let requests write as soon as they are read instead of in guest order.</summary>
    public bool OutOfOrder { get; init; }

    /// <summary>Largest data request (qemu-img's 2 MiB I/O buffer).</summary>
    public int ChunkSize { get; init; } = 2 << 20;

    /// <summary>-r: bytes per second written to the target (data and zeroes); 0 for no limit.</summary>
    public long RateLimit { get; init; }

    /// <summary>The clock of <see cref="RateLimit"/>.</summary>
    public TimeProvider Time { get; init; } = TimeProvider.System;

    /// <summary>
    /// --salvage: what cannot be read is copied as zeroes, sector by sector, and a block status
    /// that fails even for one sector counts as data; each loss is told to <see cref="SalvageWarning"/>.
    /// </summary>
    public bool Salvage { get; init; }

    /// <summary>Receives the warnings of <see cref="Salvage"/> (null: quiet).</summary>
    public Action<string>? SalvageWarning { get; init; }
}

/// <summary>What a failed copy was doing.</summary>
public enum CopyStep
{
    /// <summary>Asking a source which ranges hold data.</summary>
    BlockStatus,
    /// <summary>Reading a source.</summary>
    Read,
    /// <summary>Writing the target.</summary>
    Write,
}

/// <summary>
/// Where a copy failed: the step and the offset qemu-img names, the target offset of a read or
/// write request, the offset in its source of a block-status query.
/// </summary>
public sealed record CopyFailure(CopyStep Step, long Offset, IOException Error);

/// <summary>
/// qemu-img convert's copy loop: block status plans the requests (holes are never read),
/// <see cref="CopyOptions.Parallel"/> workers each read into their own reused buffer while
/// others write, and writes happen in guest order unless <see cref="CopyOptions.OutOfOrder"/>.
/// Each data buffer is scanned for zeroes once.
/// </summary>
public sealed class ImageCopier
{
    private readonly IReadOnlyList<DiskImage> _sources;
    private readonly DiskImage _target;
    private readonly CopyOptions _options;
    private readonly Lock _gate = new();
    private readonly SemaphoreSlim _planning = new(1, 1);
    private readonly WriteTurns _turns = new();
    private readonly RateLimiter _rate;
    private CopyFailure? _failure;
    private long _allocated;
    private long _done;

    /// <summary>A copier from <paramref name="sources"/> (laid end to end) into <paramref name="target"/>.</summary>
    public ImageCopier(IReadOnlyList<DiskImage> sources, DiskImage target, CopyOptions options)
    {
        if (options.Compress && target.CompressedWriteUnit <= 0)
            throw new ArgumentException("Compression needs a target that writes compressed units", nameof(options));
        _sources = sources;
        _target = target;
        _options = options;
        _rate = new RateLimiter(options.RateLimit, options.Time);
    }

    /// <summary>
    /// Copies everything, then flushes the target. Returns null on success, or the first
    /// failure (lowest offset) after stopping the other requests. <paramref name="progress"/>
    /// gets qemu-img convert's percentage: the share of the sources' data (and of their zero
    /// ranges with -S 0) planned so far, counted by a first pass over the block status as
    /// qemu-img does, reported as each request is planned.
    /// </summary>
    public async Task<CopyFailure?> RunAsync(Action<double>? progress = null, CancellationToken cancellationToken = default)
    {
        if (progress is not null)
        {
            var counter = NewPlanner();
            try
            {
                _allocated = await CountAllocatedAsync(counter, cancellationToken).ConfigureAwait(false);
            }
            catch (IOException e)
            {
                return new CopyFailure(CopyStep.BlockStatus, counter.SourcePosition, e);
            }
        }
        var planner = NewPlanner();
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        int workers = Math.Clamp(_options.Parallel, 1, 64);
        var tasks = new Task[workers];
        for (int i = 0; i < workers; i++) tasks[i] = Task.Run(() => WorkAsync(planner, progress, stop, cancellationToken), CancellationToken.None);
        try
        {
            await Task.WhenAll(tasks).ConfigureAwait(false);
        }
        catch (Exception)
        {
            // Sorted out below: a copy failure, a crash in one worker (the others were stopped), or cancellation.
        }
        if (_failure is not null) return _failure;
        var crash = tasks.Where(t => t.IsFaulted).Select(t => t.Exception!.InnerException!).FirstOrDefault(e => e is not OperationCanceledException);
        if (crash is not null) ExceptionDispatchInfo.Throw(crash);
        cancellationToken.ThrowIfCancellationRequested();
        if (_options.Compress)
        {
            // qemu-img's final zero-length compressed write: the driver aligns its files' ends.
            try
            {
                await _target.EndCompressedWritesAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (IOException e)
            {
                return new CopyFailure(CopyStep.Write, _sources.Sum(s => s.Length), e);
            }
        }
        await _target.FlushAsync(cancellationToken).ConfigureAwait(false);
        return null;
    }

    private CopyPlanner NewPlanner()
    {
        int alignment = _options.Compress ? _target.CompressedWriteUnit : 1;
        return new CopyPlanner(_sources.Select(s => s.Root).ToArray(), _options.ChunkSize, alignment, _options.TopOnly,
            chunkZeroes: WriteOutZeroes, salvage: _options.Salvage ? (_options.SalvageWarning ?? (_ => { })) : null);
    }

    /// <summary>convert_co_read with --salvage: the failed request again sector by sector, the sectors that still fail as zeroes.</summary>
    private async Task SalvageReadAsync(DiskImage source, long offset, Memory<byte> data, CancellationToken cancellationToken)
    {
        const int sector = 512;
        for (int done = 0; done < data.Length; done += sector)
        {
            var part = data.Slice(done, Math.Min(sector, data.Length - done));
            try
            {
                await source.ReadAsync(offset + done, part, cancellationToken).ConfigureAwait(false);
            }
            catch (IOException e)
            {
                _options.SalvageWarning?.Invoke($"error while reading offset {offset + done}: {Native.NativeIOException.ErrorText(e)}");
                part.Span.Clear();
            }
        }
    }

    /// <summary>convert_do_copy's first pass: the bytes of the requests that count for the progress.</summary>
    private async Task<long> CountAllocatedAsync(CopyPlanner planner, CancellationToken cancellationToken)
    {
        long total = 0;
        while (await planner.NextAsync(cancellationToken).ConfigureAwait(false) is { } segment)
            if (CountsForProgress(segment)) total += segment.Length;
        return total;
    }

    private bool CountsForProgress(CopySegment segment) =>
        segment.Kind == CopySegmentKind.Data || (segment.Kind == CopySegmentKind.Zero && WriteOutZeroes);

    private async Task WorkAsync(CopyPlanner planner, Action<double>? progress, CancellationTokenSource stop, CancellationToken cancellationToken)
    {
        try
        {
            await CopyLoopAsync(planner, progress, stop, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            // A worker that dies holds its write turn forever: stop the others instead of leaving them waiting.
            stop.Cancel();
            throw;
        }
    }

    /// <remarks>
    /// A read in flight is not cancelled when another request fails (only by the caller's
    /// <paramref name="cancellationToken"/>): an earlier request may fail too, and the failure
    /// named is the lowest offset's, as in qemu-img, whose requests on a node run in the order
    /// they were issued. Nothing is written once the copy is stopping.
    /// </remarks>
    private async Task CopyLoopAsync(CopyPlanner planner, Action<double>? progress, CancellationTokenSource stop, CancellationToken cancellationToken)
    {
        var ct = stop.Token;
        using var buffer = new NativeBuffer(_options.ChunkSize);
        var memory = buffer.Memory;
        while (true)
        {
            CopySegment? next = null;
            await _planning.WaitAsync(ct).ConfigureAwait(false);
            try
            {
                next = await planner.NextAsync(ct).ConfigureAwait(false);
            }
            catch (IOException e)
            {
                Fail(new CopyFailure(CopyStep.BlockStatus, planner.SourcePosition, e), stop);
                return;
            }
            finally
            {
                if (next is { } planned && CountsForProgress(planned)) Report(planned.Length, progress);
                _planning.Release();
            }
            if (next is not { } segment) return;
            var data = memory[..(HasPayload(segment) ? (int)segment.Length : 0)];
            if (segment.Kind == CopySegmentKind.Zero)
            {
                data.Span.Clear();
            }
            else if (segment.Kind == CopySegmentKind.Data)
            {
                try
                {
                    await _sources[segment.Source].ReadAsync(segment.SourceOffset, data, cancellationToken).ConfigureAwait(false);
                }
                catch (IOException) when (_options.Salvage)
                {
                    await SalvageReadAsync(_sources[segment.Source], segment.SourceOffset, data, cancellationToken).ConfigureAwait(false);
                }
                catch (IOException e)
                {
                    Fail(new CopyFailure(CopyStep.Read, segment.TargetOffset, e), stop);
                    return;
                }
                if (ct.IsCancellationRequested) return;
            }
            // Compression is the expensive part of -c: done here, before waiting for the write
            // turn, it runs in parallel across workers.
            var packed = _options.Compress && HasPayload(segment) ? CompressClusters(data.Span) : null;
            if (!_options.OutOfOrder) await _turns.WaitAsync(segment.Sequence, ct).ConfigureAwait(false);
            if (Writes(segment)) await _rate.WaitAsync(segment.Length, ct).ConfigureAwait(false);
            try
            {
                await WriteAsync(segment, data, packed, ct).ConfigureAwait(false);
            }
            catch (IOException e)
            {
                Fail(new CopyFailure(CopyStep.Write, segment.TargetOffset, e), stop);
                return;
            }
            if (!_options.OutOfOrder) _turns.Complete(segment.Sequence);
        }
    }

    private void Fail(CopyFailure failure, CancellationTokenSource stop)
    {
        lock (_gate)
        {
            if (_failure is null || failure.Offset < _failure.Offset) _failure = failure;
        }
        stop.Cancel();
    }

    /// <summary>
    /// Called under the planning lock, so reports come in guest order. With -c qemu-img copies
    /// one cluster per request: the progress moves by clusters, whatever the request size here.
    /// </summary>
    private void Report(long bytes, Action<double>? progress)
    {
        if (progress is null) return;
        long step = _options.Compress ? _target.CompressedWriteUnit : bytes;
        for (long left = bytes; left > 0; left -= step)
        {
            _done += Math.Min(step, left);
            progress(100.0 * _done / _allocated);
        }
    }

    /// <summary>True when the request writes to the target (data, or zeroes the target does not already read).</summary>
    private bool Writes(CopySegment segment) =>
        segment.Kind == CopySegmentKind.Data || (segment.Kind == CopySegmentKind.Zero && (WriteOutZeroes || !_options.TargetIsZero));

    /// <summary>-S 0: zero ranges are written as data rather than skipped or zeroed.</summary>
    private bool WriteOutZeroes => _options.MinSparse == 0;

    /// <summary>True when the request writes bytes from its buffer.</summary>
    private bool HasPayload(CopySegment segment) =>
        segment.Kind == CopySegmentKind.Data || (segment.Kind == CopySegmentKind.Zero && WriteOutZeroes);

    private ValueTask WriteAsync(CopySegment segment, Memory<byte> data, CompressedCluster[]? packed, CancellationToken ct)
    {
        if (segment.Kind == CopySegmentKind.Skip) return ValueTask.CompletedTask;
        if (!HasPayload(segment)) return WriteZeroesAsync(segment.TargetOffset, segment.Length, ct);
        return packed is not null ? WriteCompressedAsync(segment.TargetOffset, data, packed, ct) : WriteDataAsync(segment.TargetOffset, data, ct);
    }

    /// <summary>One cluster of a -c request: all zeroes (left to WriteZeroes), or its compressed form (null: stored plain).</summary>
    private readonly record struct CompressedCluster(bool Zero, byte[]? Compressed);

    private CompressedCluster[] CompressClusters(ReadOnlySpan<byte> data)
    {
        int cluster = _target.CompressedWriteUnit;
        var packed = new CompressedCluster[(data.Length + cluster - 1) / cluster];
        for (int i = 0; i < packed.Length; i++)
        {
            var piece = data.Slice(i * cluster, Math.Min(cluster, data.Length - i * cluster));
            bool zero = !WriteOutZeroes && !piece.ContainsAnyExcept((byte)0);
            packed[i] = new CompressedCluster(zero, zero ? null : _target.CompressUnit(piece));
        }
        return packed;
    }

    private ValueTask WriteZeroesAsync(long offset, long length, CancellationToken ct) =>
        _options.TargetIsZero ? ValueTask.CompletedTask : _target.WriteZeroesAsync(offset, length, ZeroFlags.MayUnmap, ct);

    private async ValueTask WriteCompressedAsync(long offset, Memory<byte> data, CompressedCluster[] packed, CancellationToken ct)
    {
        int cluster = _target.CompressedWriteUnit;
        for (int i = 0; i < packed.Length; i++)
        {
            int pos = i * cluster;
            var piece = data.Slice(pos, Math.Min(cluster, data.Length - pos));
            if (packed[i].Zero) await WriteZeroesAsync(offset + pos, piece.Length, ct).ConfigureAwait(false);
            else await _target.WriteCompressedUnitAsync(offset + pos, piece, packed[i].Compressed, ct).ConfigureAwait(false);
        }
    }

    private async ValueTask WriteDataAsync(long offset, Memory<byte> data, CancellationToken ct)
    {
        if (_options.MinSparse == 0)
        {
            await _target.WriteAsync(offset, data, WriteFlags.None, ct).ConfigureAwait(false);
            return;
        }
        // Aligned runs of MinSparse zero bytes become holes (or zeroes on a target with data).
        var scanner = new ZeroRunScanner((int)Math.Min(_options.MinSparse, int.MaxValue));
        while (NextRun(ref scanner, data, out int start, out int length, out bool zero))
        {
            if (zero) await WriteZeroesAsync(offset + start, length, ct).ConfigureAwait(false);
            else await _target.WriteAsync(offset + start, data.Slice(start, length), WriteFlags.None, ct).ConfigureAwait(false);
        }
    }

    private static bool NextRun(ref ZeroRunScanner scanner, Memory<byte> data, out int start, out int length, out bool zero) =>
        scanner.Next(data.Span, out start, out length, out zero);
}
