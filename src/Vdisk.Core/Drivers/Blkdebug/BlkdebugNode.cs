using Vdisk.Graph;
using Vdisk.Native;
using Vdisk.Options;
using Vdisk.Permissions;

namespace Vdisk.Drivers.Blkdebug;

/// <summary>
/// A blkdebug node: passes every request to its <c>image</c> child unless an active
/// <c>inject-error</c> rule fails it; reacts to the events formats above announce on it; holds
/// requests suspended at breakpoints until qemu-io resumes them. A filter: its child is asked
/// for what its parents take (plus <c>take-child-perms</c>) and shares what they share (minus
/// <c>unshare-child-perms</c>).
/// </summary>
public sealed class BlkdebugNode : BlockNode
{
    private readonly BdrvChild _image;
    private readonly BlkdebugRuleSet _rules;
    private readonly BlkdebugPermissionRule _permissionRule;
    private readonly List<(string Tag, TaskCompletionSource Resume)> _suspended = new();
    private readonly object _gate = new();
    private TaskCompletionSource _suspension = NewSignal();

    // bs->write_gen and bs->flushed_gen: a flush with no write since the last one does not reach
    // blkdebug's flush (so an active error does not fail it), as bdrv_co_flush skips it.
    private long _writeGeneration;
    private long _flushedGeneration;

    private static TaskCompletionSource NewSignal() => new(TaskCreationOptions.RunContinuationsAsynchronously);

    internal BlkdebugNode(string nodeName, NodeFlags flags, BlockNode image, BlkdebugRuleSet rules, BlkdebugLimits limits,
        BlockPermission takeChildPerms, BlockPermission unshareChildPerms, string? configFile, bool exactFilename)
        : base(nodeName, flags, image.Filename)
    {
        _rules = rules;
        Limits = limits;
        _permissionRule = new BlkdebugPermissionRule(takeChildPerms, unshareChildPerms);
        _image = AttachChild("image", image, ChildRole.Filtered | ChildRole.Primary);
        Filename = exactFilename && !image.Filename.StartsWith(JsonOptions.Prefix, StringComparison.Ordinal)
            ? $"blkdebug:{configFile}:{image.Filename}"
            : JsonOptions.Prefix + JsonFilename(configFile, image);
        // The "none" event fires once, when the node is created (rules on it apply at once).
        _rules.OnEvent(BlkdebugEvent.None);
    }

    /// <summary>
    /// Where "blkdebug: Suspended request" lines go (qemu-io points it at its output); Console.Out
    /// when unset, looked up at first use: an initialiser set up the console's writer (charset
    /// lookup, encoder) in every qemu-io run, blkdebug or not.
    /// </summary>
    public static TextWriter SuspendReports
    {
        get => s_suspendReports ?? Console.Out;
        set => s_suspendReports = value;
    }

    private static TextWriter? s_suspendReports;

    /// <summary>The request limits given as options.</summary>
    public BlkdebugLimits Limits { get; }

    /// <inheritdoc />
    public override string DriverName => "blkdebug";

    /// <inheritdoc />
    public override bool IsProtocol => true;

    /// <inheritdoc />
    public override IChildPermissionRule PermissionRule => _permissionRule;

    /// <summary>The node below.</summary>
    public BlockNode Image => _image.Node;

    /// <inheritdoc />
    public override BlockNode? FilteredNode => Image;

    /// <inheritdoc />
    public override long Length => Image.Length;

    /// <inheritdoc />
    public override bool HasZeroInit => Image.HasZeroInit;

    /// <inheritdoc />
    public override bool UnallocatedReadsAsZeroes => Image.UnallocatedReadsAsZeroes;

    /// <summary>The options QEMU's json: filename for this node shows (bdrv_refresh_filename).</summary>
    private string JsonFilename(string? configFile, BlockNode image)
    {
        var dict = new OptionDict();
        dict.Set("driver", DriverName);
        if (configFile is not null) dict.Set("config", configFile);
        if (Limits.Align != 0) dict.Set("align", new OptionScalar(Limits.Align.ToString(System.Globalization.CultureInfo.InvariantCulture), ScalarKind.Number));
        OptionValue child;
        if (image.Filename.StartsWith(JsonOptions.Prefix, StringComparison.Ordinal))
        {
            child = JsonOptions.ParseFilename(image.Filename);
        }
        else
        {
            var c = new OptionDict();
            c.Set("driver", image.DriverName);
            c.Set("filename", image.Filename);
            child = c;
        }
        dict.Set("image", child);
        var sb = new System.Text.StringBuilder();
        dict.WriteJson(sb);
        return sb.ToString();
    }

    /// <inheritdoc />
    public override async ValueTask DebugEventAsync(BlkdebugEvent e)
    {
        IReadOnlyList<string> tags;
        lock (_gate) tags = _rules.OnEvent(e);
        foreach (string tag in tags) await SuspendAsync(tag).ConfigureAwait(false);
    }

    // suspend_request: the request waits here until "resume TAG" (or "remove_break TAG"). The
    // line is out before anyone can see the request suspended, so qemu-io's next lines follow it.
    private async ValueTask SuspendAsync(string tag)
    {
        var resume = NewSignal();
        SuspendReports.Write($"blkdebug: Suspended request '{tag}'\n");
        SuspendReports.Flush();
        TaskCompletionSource signal;
        lock (_gate)
        {
            _suspended.Add((tag, resume));
            signal = _suspension;
            _suspension = NewSignal();
        }
        signal.SetResult();
        await resume.Task.ConfigureAwait(false);
    }

    /// <summary>Completes when a request is next suspended (qemu-io's wait_break polls with it).</summary>
    public Task NextSuspensionAsync()
    {
        lock (_gate) return _suspension.Task;
    }

    // QEMU prints this as the request continues, inside the resume command: printed here, before
    // the request runs on, so it precedes anything the request then prints.
    private static void ReportResuming(string tag)
    {
        SuspendReports.Write($"blkdebug: Resuming request '{tag}'\n");
        SuspendReports.Flush();
    }

    /// <summary>bdrv_debug_breakpoint: suspends the next request reaching <paramref name="eventName"/>; false for an unknown event.</summary>
    public bool AddBreakpoint(string eventName, string tag)
    {
        if (BlkdebugEvents.Parse(eventName) is not { } e) return false;
        lock (_gate) _rules.Add(new BlkdebugSuspend(e, tag));
        return true;
    }

    /// <summary>bdrv_debug_resume: lets the request suspended under <paramref name="tag"/> go on; false when there is none.</summary>
    public bool Resume(string tag)
    {
        TaskCompletionSource? resume = null;
        lock (_gate)
        {
            int i = _suspended.FindIndex(s => s.Tag == tag);
            if (i >= 0)
            {
                resume = _suspended[i].Resume;
                _suspended.RemoveAt(i);
            }
        }
        if (resume is null) return false;
        ReportResuming(tag);
        resume.SetResult();
        return true;
    }

    /// <summary>bdrv_debug_remove_breakpoint: drops the breakpoints and resumes the requests with <paramref name="tag"/>.</summary>
    public bool RemoveBreakpoint(string tag)
    {
        List<TaskCompletionSource> resumed;
        bool removed;
        lock (_gate)
        {
            removed = _rules.RemoveBreakpoints(tag);
            resumed = _suspended.Where(s => s.Tag == tag).Select(s => s.Resume).ToList();
            _suspended.RemoveAll(s => s.Tag == tag);
        }
        foreach (var r in resumed)
        {
            ReportResuming(tag);
            r.SetResult();
        }
        return removed || resumed.Count > 0;
    }

    /// <summary>bdrv_debug_is_suspended.</summary>
    public bool IsSuspended(string tag)
    {
        lock (_gate) return _suspended.Exists(s => s.Tag == tag);
    }

    // rule_check over the request as the block layer hands it to blkdebug: widened to the alignment.
    private void Check(long offset, long bytes, BlkdebugIoType type)
    {
        long align = Math.Max(Limits.Align, 1);
        long start = offset / align * align;
        long end = bytes == 0 ? start : (offset + bytes + align - 1) / align * align;
        int errno;
        lock (_gate) errno = _rules.Check(start, end - start, type);
        if (errno != 0) throw new NativeIOException(errno, NativeIOException.Describe(errno), Filename);
    }

    /// <inheritdoc />
    public override async ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        Check(offset, buffer.Length, BlkdebugIoType.Read);
        await Image.ReadAsync(offset, buffer, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// bdrv_co_pwritev over blkdebug's <c>align</c>: a write that does not cover whole aligned
    /// blocks waits for the overlapping requests before it, reads the partial head and tail blocks
    /// (events pwritev_rmw_head/after_head, pwritev_rmw_tail/after_tail, a single head read when
    /// both lie in one block) and writes the whole blocks; then pwritev and pwritev_done.
    /// </summary>
    public override async ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default)
    {
        long align = Math.Max(Limits.Align, 1);
        long start = offset / align * align;
        long end = (offset + data.Length + align - 1) / align * align;
        bool padded = start != offset || end != offset + data.Length;
        var request = Track(start, end, padded);
        try
        {
            // bdrv_make_request_serialising before the reads of a padded request.
            if (padded) await WaitSerialisingAsync(request).ConfigureAwait(false);
            long writeOffset = offset;
            var payload = data;
            if (padded)
            {
                var buffer = new byte[end - start];
                // bdrv_init_padding: one read of the head block(s) when the request lies in
                // them (merge_reads), else the head block and the tail block each.
                long head = offset - start;
                long tail = end - (offset + data.Length);
                long sum = end - start;
                long bufLength = sum > align && head > 0 && tail > 0 ? 2 * align : align;
                bool mergeReads = sum == bufLength;
                if (head > 0)
                {
                    await DebugEventAsync(BlkdebugEvent.PwritevRmwHead).ConfigureAwait(false);
                    await ReadPaddingAsync(start, buffer, 0, mergeReads ? bufLength : align, cancellationToken).ConfigureAwait(false);
                    await DebugEventAsync(BlkdebugEvent.PwritevRmwAfterHead).ConfigureAwait(false);
                }
                if (tail > 0 && !(head > 0 && mergeReads))
                {
                    await DebugEventAsync(BlkdebugEvent.PwritevRmwTail).ConfigureAwait(false);
                    await ReadPaddingAsync(start, buffer, end - align - start, align, cancellationToken).ConfigureAwait(false);
                    await DebugEventAsync(BlkdebugEvent.PwritevRmwAfterTail).ConfigureAwait(false);
                }
                data.Span.CopyTo(buffer.AsSpan((int)head));
                writeOffset = start;
                // The image ends where it ends: the padding past it is not written.
                payload = buffer.AsMemory(0, (int)(Math.Max(offset + data.Length, Math.Min(end, Length)) - start));
            }
            // bdrv_co_write_req_prepare waits again (for every write) before the write itself.
            await WaitSerialisingAsync(request).ConfigureAwait(false);
            await DebugEventAsync(BlkdebugEvent.Pwritev).ConfigureAwait(false);
            // bdrv_co_write_req_finish counts the write whether it succeeded or not.
            Interlocked.Increment(ref _writeGeneration);
            Check(writeOffset, payload.Length, BlkdebugIoType.Write);
            await Image.WriteAsync(writeOffset, payload, flags, cancellationToken).ConfigureAwait(false);
            await DebugEventAsync(BlkdebugEvent.PwritevDone).ConfigureAwait(false);
        }
        finally
        {
            EndRequest(request);
        }
    }

    // Reads [bufferStart + at, +length) of the image into buffer[at..], as far as the image goes.
    private async ValueTask ReadPaddingAsync(long bufferStart, byte[] buffer, long at, long length, CancellationToken cancellationToken)
    {
        long offset = bufferStart + at;
        long n = Math.Min(length, Length - offset);
        Check(offset, length, BlkdebugIoType.Read);
        if (n > 0) await Image.ReadAsync(offset, buffer.AsMemory((int)at, (int)n), cancellationToken).ConfigureAwait(false);
    }

    // The tracked write requests (BdrvTrackedRequest): a padded (read-modify-write) request is
    // serialising; a request waits while another overlapping one, serialising or facing a
    // serialising one, runs, unless that one is itself waiting (bdrv_find_conflicting_request:
    // it will wait for this one when it wakes, so waiting for it would deadlock).
    private sealed class TrackedWrite(long start, long end, bool serialising)
    {
        public long Start { get; } = start;
        public long End { get; } = end;
        public bool Serialising { get; } = serialising;
        public bool Waiting { get; set; }
        public TaskCompletionSource Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    private readonly List<TrackedWrite> _tracked = new();

    private TrackedWrite Track(long start, long end, bool serialising)
    {
        var request = new TrackedWrite(start, end, serialising);
        // QLIST_INSERT_HEAD: the newest request is looked at first.
        lock (_gate) _tracked.Insert(0, request);
        return request;
    }

    private async ValueTask WaitSerialisingAsync(TrackedWrite self)
    {
        while (true)
        {
            TrackedWrite? conflict;
            lock (_gate)
            {
                self.Waiting = false;
                conflict = _tracked.FirstOrDefault(r => r != self && (r.Serialising || self.Serialising)
                    && r.Start < self.End && self.Start < r.End && !r.Waiting);
                if (conflict is null) return;
                self.Waiting = true;
            }
            await conflict.Done.Task.ConfigureAwait(false);
        }
    }

    private void EndRequest(TrackedWrite request)
    {
        lock (_gate) _tracked.Remove(request);
        request.Done.SetResult();
    }

    /// <summary>
    /// bdrv_co_do_pwrite_zeroes over blkdebug's limits: the range is cut at the write-zeroes
    /// alignment (<c>opt-write-zero</c>, at least <c>align</c>) and <c>max-write-zero</c>; pieces
    /// smaller than the alignment blkdebug refuses (ENOTSUP), so the block layer writes them as
    /// buffers of zeroes (at most <c>max-transfer</c> each). Only aligned pieces reach the image
    /// as zero writes, which decides what the image allocates.
    /// </summary>
    public override async ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags flags = ZeroFlags.None, CancellationToken cancellationToken = default)
    {
        await DebugEventAsync(BlkdebugEvent.PwritevZero).ConfigureAwait(false);
        Interlocked.Increment(ref _writeGeneration);
        long alignment = Math.Max(Math.Max(Limits.OptWriteZero, Limits.Align), 1);
        long maxZeroes = Limits.MaxWriteZero != 0 ? Limits.MaxWriteZero / alignment * alignment : long.MaxValue / alignment * alignment;
        foreach (var (at, num) in ZeroWritePieces.Split(offset, length, alignment, maxZeroes))
        {
            if (num >= alignment)
            {
                Check(at, num, BlkdebugIoType.WriteZeroes);
                await Image.WriteZeroesAsync(at, num, flags, cancellationToken).ConfigureAwait(false);
            }
            else if ((flags & ZeroFlags.NoFallback) != 0)
            {
                throw new NativeIOException(Errno.ENOTSUP, NativeIOException.Describe(Errno.ENOTSUP), Filename);
            }
            else
            {
                // The bounce-buffer fallback: plain writes of zeroes through blkdebug's write.
                long chunkLimit = Limits.MaxTransfer != 0 ? Limits.MaxTransfer : MaxBounceBuffer;
                var zeroes = new byte[Math.Min(num, chunkLimit)];
                for (long done = 0; done < num;)
                {
                    int n = (int)Math.Min(num - done, zeroes.Length);
                    Check(at + done, n, BlkdebugIoType.Write);
                    await Image.WriteAsync(at + done, zeroes.AsMemory(0, n),
                        (flags & ZeroFlags.Fua) != 0 ? WriteFlags.Fua : WriteFlags.None, cancellationToken).ConfigureAwait(false);
                    done += n;
                }
            }
        }
        await DebugEventAsync(BlkdebugEvent.PwritevDone).ConfigureAwait(false);
    }

    // MAX_BOUNCE_BUFFER of block/io.c: 32768 sectors.
    private const long MaxBounceBuffer = 32768L * 512;

    /// <inheritdoc />
    public override async ValueTask DiscardAsync(long offset, long length, CancellationToken cancellationToken = default)
    {
        Interlocked.Increment(ref _writeGeneration);
        Check(offset, length, BlkdebugIoType.Discard);
        await Image.DiscardAsync(offset, length, cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public override async ValueTask FlushAsync(CancellationToken cancellationToken = default)
    {
        long generation = Interlocked.Read(ref _writeGeneration);
        if (generation != Interlocked.Read(ref _flushedGeneration))
        {
            Check(0, 0, BlkdebugIoType.Flush);
            Interlocked.Exchange(ref _flushedGeneration, generation);
        }
        await Image.FlushAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public override async ValueTask<BlockStatus> GetBlockStatusAsync(long offset, long length, CancellationToken cancellationToken = default)
    {
        Check(offset, length, BlkdebugIoType.BlockStatus);
        var status = await Image.GetBlockStatusAsync(offset, length, cancellationToken).ConfigureAwait(false);
        return status with { Length = Math.Min(status.Length, length) };
    }

    /// <inheritdoc />
    public override ValueTask TruncateAsync(long length, CancellationToken cancellationToken = default) =>
        Image.TruncateAsync(length, cancellationToken);

    /// <inheritdoc />
    public override ValueTask TruncateAsync(long length, Preallocation preallocation, CancellationToken cancellationToken = default) =>
        Image.TruncateAsync(length, preallocation, cancellationToken);
}

/// <summary>blkdebug_child_perm: the filter's default rule, then take-child-perms added and unshare-child-perms taken away.</summary>
internal sealed class BlkdebugPermissionRule(BlockPermission take, BlockPermission unshare) : IChildPermissionRule
{
    public PermissionPair ChildPermissions(ChildRole role, NodeFlags nodeFlags, PermissionPair cumulative)
    {
        var p = DefaultPermissions.ForChild(role, nodeFlags, cumulative);
        return new PermissionPair(p.Perm | take, p.Shared & ~unshare);
    }
}
