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

    /// <summary>Where "blkdebug: Suspended request" lines go (qemu-io points it at its output).</summary>
    public static TextWriter SuspendReports { get; set; } = Console.Out;

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

    // suspend_request: the request waits here until "resume TAG" (or "remove_break TAG").
    private async ValueTask SuspendAsync(string tag)
    {
        var resume = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_gate) _suspended.Add((tag, resume));
        SuspendReports.Write($"blkdebug: Suspended request '{tag}'\n");
        SuspendReports.Flush();
        await resume.Task.ConfigureAwait(false);
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
        resume?.SetResult();
        return resume is not null;
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
        foreach (var r in resumed) r.SetResult();
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

    /// <inheritdoc />
    public override async ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default)
    {
        await DebugEventAsync(BlkdebugEvent.Pwritev).ConfigureAwait(false);
        Check(offset, data.Length, BlkdebugIoType.Write);
        await Image.WriteAsync(offset, data, flags, cancellationToken).ConfigureAwait(false);
        await DebugEventAsync(BlkdebugEvent.PwritevDone).ConfigureAwait(false);
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
        long alignment = Math.Max(Math.Max(Limits.OptWriteZero, Limits.Align), 1);
        long maxZeroes = Limits.MaxWriteZero != 0 ? Limits.MaxWriteZero / alignment * alignment : long.MaxValue / alignment * alignment;
        long head = offset % alignment;
        long tail = (offset + length) % alignment;
        while (length > 0)
        {
            long num = length;
            if (head != 0)
            {
                num = Math.Min(length, alignment - head);
                head = (head + num) % alignment;
            }
            else if (tail != 0 && num > alignment)
            {
                num -= tail;
            }
            num = Math.Min(num, maxZeroes);
            if (num >= alignment)
            {
                Check(offset, num, BlkdebugIoType.WriteZeroes);
                await Image.WriteZeroesAsync(offset, num, flags, cancellationToken).ConfigureAwait(false);
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
                    Check(offset + done, n, BlkdebugIoType.Write);
                    await Image.WriteAsync(offset + done, zeroes.AsMemory(0, n),
                        (flags & ZeroFlags.Fua) != 0 ? WriteFlags.Fua : WriteFlags.None, cancellationToken).ConfigureAwait(false);
                    done += n;
                }
            }
            offset += num;
            length -= num;
        }
        await DebugEventAsync(BlkdebugEvent.PwritevDone).ConfigureAwait(false);
    }

    // MAX_BOUNCE_BUFFER of block/io.c: 32768 sectors.
    private const long MaxBounceBuffer = 32768L * 512;

    /// <inheritdoc />
    public override async ValueTask DiscardAsync(long offset, long length, CancellationToken cancellationToken = default)
    {
        Check(offset, length, BlkdebugIoType.Discard);
        await Image.DiscardAsync(offset, length, cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public override async ValueTask FlushAsync(CancellationToken cancellationToken = default)
    {
        Check(0, 0, BlkdebugIoType.Flush);
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
