using Vdisk.Graph;
using Vdisk.Native;
using Vdisk.Options;
using Vdisk.Permissions;

namespace Vdisk.Drivers.Quorum;

/// <summary>
/// A <c>quorum</c> node, as QEMU 7.2's block/quorum.c. Writes (and zero writes) go to every child
/// at once and succeed when at least the threshold of them did. A read (read-pattern=quorum)
/// reads every child; when all successful reads agree, that is the answer; otherwise the version
/// read by most children wins if it has the threshold's votes (ties: the version first seen
/// last, as QEMU's list order decides), outvoted children are rewritten with it under
/// rewrite-corrupted, and without a winner the read fails with EIO. Too few successful requests
/// fail with the error most children returned. In blkverify mode the first difference prints
/// <c>quorum: offset=O bytes=N contents mismatch at offset X</c> and ends the process (exit 1).
/// read-pattern=fifo reads the children in order until one succeeds. Block status says zero
/// where every child's chain does, data elsewhere. QMP events (QUORUM_REPORT_BAD,
/// QUORUM_FAILURE) are not sent.
/// </summary>
public sealed class QuorumNode : BlockNode
{
    private readonly List<BdrvChild> _children = [];
    private readonly QuorumSettings _settings;
    private readonly long _length;

    internal QuorumNode(string nodeName, NodeFlags flags, IReadOnlyList<(string Name, BlockNode Node)> children, QuorumSettings settings)
        : base(nodeName, flags, "")
    {
        _settings = settings;
        PermissionRule = new QuorumChildPermissionRule(settings.RewriteCorrupted);
        // quorum_getlength: every child must be as long as the first (checked before any edge is
        // made, so a refused open leaves existing nodes without a parent).
        _length = children[0].Node.Length;
        if (children.Any(c => c.Node.Length != _length))
            throw new NativeIOException(Errno.EIO, "Could not refresh total sector count: Input/output error");
        _children.AddRange(AttachChildren(children.Select(c => (c.Name, c.Node, ChildRole.Data))));
        Filename = JsonOptions.Prefix + JsonFilename(children.Select(c => c.Node), settings);
    }

    /// <inheritdoc />
    public override bool ReadsMayWrite => _settings.RewriteCorrupted || CopyOnRead;

    /// <inheritdoc />
    /// <remarks>Its children have no one directory: "Cannot generate a base directory for quorum nodes".</remarks>
    protected override bool HasDirname => false;

    /// <inheritdoc />
    public override string DriverName => "quorum";

    /// <inheritdoc />
    public override bool IsProtocol => false;

    /// <inheritdoc />
    public override IChildPermissionRule PermissionRule { get; }

    /// <summary>The settings the node was opened with.</summary>
    public QuorumSettings Settings => _settings;

    /// <summary>The children, in index order.</summary>
    public IReadOnlyList<BlockNode> QuorumChildren => _children.Select(c => c.Node).ToList();

    /// <inheritdoc />
    public override long Length => _length;

    /// <inheritdoc />
    /// <remarks>bdrv_sum_allocated_file_size: the children's sizes added up, unavailable if one is.</remarks>
    public override long? AllocatedSize
    {
        get
        {
            long sum = 0;
            foreach (var child in _children)
            {
                if (child.Node.AllocatedSize is not { } size) return null;
                sum += size;
            }
            return sum;
        }
    }

    /// <summary>
    /// The options of the json: filename QEMU gives a quorum node (quorum_gather_child_options:
    /// each child's options, then the driver and the options that change what it reads, numbers
    /// as strings).
    /// </summary>
    private static string JsonFilename(IEnumerable<BlockNode> children, QuorumSettings settings)
    {
        var dict = new OptionDict();
        var list = new OptionList();
        foreach (var child in children) list.Items.Add(NodeFullOptions.Of(child));
        dict.Set("children", list);
        dict.Set("driver", "quorum");
        if (settings.Fifo) dict.Set("read-pattern", "fifo");
        if (settings.Blkverify) dict.Set("blkverify", "true");
        if (settings.RewriteCorrupted) dict.Set("rewrite-corrupted", "true");
        dict.Set("vote-threshold", settings.Threshold.ToString(System.Globalization.CultureInfo.InvariantCulture));
        var sb = new System.Text.StringBuilder();
        dict.WriteJson(sb);
        return sb.ToString();
    }

    /// <inheritdoc />
    public override async ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        if (_settings.Fifo)
        {
            await ReadFifoAsync(offset, buffer, cancellationToken).ConfigureAwait(false);
            return;
        }
        int n = _children.Count;
        var buffers = new byte[n][];
        var reads = new Task<int>[n];
        for (int i = 0; i < n; i++)
        {
            buffers[i] = new byte[buffer.Length];
            var (child, into) = (_children[i].Node, buffers[i]);
            reads[i] = FormatIo.ResultOf(() => child.ReadAsync(offset, into, cancellationToken));
        }
        var results = await Task.WhenAll(reads).ConfigureAwait(false);
        cancellationToken.ThrowIfCancellationRequested();
        ThrowIfTooFewSucceeded(results);

        int first = Array.IndexOf(results, 0);
        bool agree = true;
        for (int j = first + 1; j < n && agree; j++)
        {
            if (results[j] != 0) continue;
            agree = Compare(offset, buffers[first], buffers[j]);
        }
        if (agree)
        {
            buffers[first].CopyTo(buffer);
            return;
        }

        var winner = QuorumVote.Winner(Enumerable.Range(0, n).Where(i => results[i] == 0), i => buffers[i]);
        if (winner.Votes < _settings.Threshold) throw new NativeIOException(Errno.EIO, NativeIOException.Describe(Errno.EIO), Filename);
        buffers[winner.Index].CopyTo(buffer);
        if (_settings.RewriteCorrupted)
        {
            // A correction attempt on data already found bad: its errors are ignored.
            var outvoted = Enumerable.Range(0, n).Where(i => results[i] == 0 && !winner.Members.Contains(i));
            await Task.WhenAll(outvoted.Select(i => FormatIo.ResultOf(() => _children[i].Node.WriteAsync(offset, buffers[winner.Index], WriteFlags.None, cancellationToken)))).ConfigureAwait(false);
        }
    }

    private async ValueTask ReadFifoAsync(long offset, Memory<byte> buffer, CancellationToken ct)
    {
        for (int i = 0; ; i++)
        {
            try
            {
                await _children[i].Node.ReadAsync(offset, buffer, ct).ConfigureAwait(false);
                return;
            }
            catch (IOException) when (i + 1 < _children.Count)
            {
                // The next child, in order.
            }
        }
    }

    /// <summary>quorum_compare: equal contents; in blkverify mode a difference ends the process with QEMU's line.</summary>
    private bool Compare(long offset, byte[] a, byte[] b)
    {
        int same = a.AsSpan().CommonPrefixLength(b);
        if (same == a.Length) return true;
        if (_settings.Blkverify) Diagnostics.Fatal($"quorum: offset={offset} bytes={a.Length} contents mismatch at offset {offset + same}");
        return false;
    }

    /// <inheritdoc />
    public override ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default) =>
        OnAllAsync(c => c.WriteAsync(offset, data, flags, cancellationToken));

    /// <inheritdoc />
    public override ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags flags = ZeroFlags.None, CancellationToken cancellationToken = default) =>
        OnAllAsync(c => c.WriteZeroesAsync(offset, length, flags, cancellationToken));

    /// <summary>quorum_co_pwritev: the request on every child at once; fewer successes than the threshold fail with the voted error.</summary>
    private async ValueTask OnAllAsync(Func<BlockNode, ValueTask> request)
    {
        var results = await Task.WhenAll(_children.Select(c => FormatIo.ResultOf(() => request(c.Node)))).ConfigureAwait(false);
        ThrowIfTooFewSucceeded(results);
    }

    /// <inheritdoc />
    /// <remarks>quorum_co_flush: the children one after the other, the same threshold rule.</remarks>
    public override async ValueTask FlushAsync(CancellationToken cancellationToken = default)
    {
        var results = new int[_children.Count];
        for (int i = 0; i < results.Length; i++)
        {
            var child = _children[i].Node;
            results[i] = await FormatIo.ResultOf(() => child.FlushAsync(cancellationToken)).ConfigureAwait(false);
        }
        ThrowIfTooFewSucceeded(results);
    }

    /// <summary>quorum_has_too_much_io_failed and quorum_vote_error: below the threshold, the error most children returned.</summary>
    private void ThrowIfTooFewSucceeded(int[] results)
    {
        if (results.Count(r => r == 0) >= _settings.Threshold) return;
        var failed = Enumerable.Range(0, results.Length).Where(i => results[i] != 0);
        int errno = -results[QuorumVote.Winner(failed, i => BitConverter.GetBytes(results[i])).Index];
        throw new NativeIOException(errno, NativeIOException.Describe(errno), Filename);
    }

    /// <inheritdoc />
    /// <remarks>quorum_co_block_status: zero where every child's chain reads zeroes (the shortest such run), data otherwise (the longest).</remarks>
    public override async ValueTask<BlockStatus> GetBlockStatusAsync(long offset, long length, CancellationToken cancellationToken = default)
    {
        length = Math.Min(length, _length - offset);
        if (length <= 0) return new BlockStatus(0, BlockStatusFlags.None);
        long zero = length, data = 0;
        foreach (var child in _children)
        {
            BlockStatus status;
            try
            {
                status = await BlockChain.StatusAboveAsync(child.Node, offset, length, cancellationToken).ConfigureAwait(false);
            }
            catch (IOException)
            {
                data = length;
                break;
            }
            if ((status.Flags & BlockStatusFlags.Zero) != 0) zero = Math.Min(zero, status.Length);
            else data = Math.Max(data, status.Length);
        }
        return data > 0
            ? new BlockStatus(data, BlockStatusFlags.Data | BlockStatusFlags.Allocated)
            : new BlockStatus(zero, BlockStatusFlags.Zero | BlockStatusFlags.Allocated);
    }
}

/// <summary>
/// quorum_count_vote and quorum_get_vote_winner over equal contents: versions in the order QEMU's
/// list keeps them (a new version goes first), the first with the most votes wins; a version's
/// index is the first child that read it.
/// </summary>
internal static class QuorumVote
{
    public sealed record Version(byte[] Value, int Index, List<int> Members)
    {
        public int Votes => Members.Count;
    }

    public static Version Winner(IEnumerable<int> voters, Func<int, byte[]> valueOf)
    {
        var versions = new List<Version>();
        foreach (int i in voters)
        {
            var value = valueOf(i);
            var version = versions.FirstOrDefault(v => v.Value.AsSpan().SequenceEqual(value));
            if (version is null) versions.Insert(0, version = new Version(value, i, []));
            version.Members.Add(i);
        }
        Version? winner = null;
        foreach (var v in versions)
            if (winner is null || v.Votes > winner.Votes) winner = v;
        return winner ?? throw new InvalidOperationException("a vote needs at least one voter");
    }
}

/// <summary>
/// quorum_child_perm: the parent's requests passed through (plus WRITE under rewrite-corrupted),
/// and nothing shared that would let the children drift apart (no WRITE, no RESIZE).
/// </summary>
internal sealed class QuorumChildPermissionRule(bool rewriteCorrupted) : IChildPermissionRule
{
    public PermissionPair ChildPermissions(ChildRole role, NodeFlags nodeFlags, PermissionPair cumulative)
    {
        var perm = cumulative.Perm & BlockPermissions.Passthrough;
        if (rewriteCorrupted) perm |= BlockPermission.Write;
        var shared = (cumulative.Shared & (BlockPermission.ConsistentRead | BlockPermission.WriteUnchanged)) | BlockPermissions.Unchanged;
        return new PermissionPair(perm, shared);
    }
}
