using Vdisk.Graph;
using Vdisk.Native;
using Vdisk.Permissions;

namespace Vdisk.Tests.Copy;

/// <summary>
/// An in-memory protocol node with a sparse map (per 512-byte sector, like a sparse file):
/// block status reports holes as zero, it records writes and can fail chosen requests.
/// </summary>
internal sealed class MemoryNode : BlockNode
{
    private const int Sector = 512;
    private readonly byte[] _data;
    private readonly bool[] _allocated;
    private readonly Lock _gate = new();

    public MemoryNode(string name, long length) : base(name, NodeFlags.ReadWrite, name)
    {
        _data = new byte[length];
        _allocated = new bool[(length + Sector - 1) / Sector];
    }

    /// <summary>Writes and zeroings in the order they arrived: (offset, length, "write" or "zero").</summary>
    public List<(long Offset, long Length, string Kind)> Log { get; } = new();

    /// <summary>Reads overlapping this offset fail with EIO.</summary>
    public long? FailReadAt { get; set; }

    /// <summary>
    /// A read overlapping this offset is slow: it stays in flight until the read at
    /// <see cref="FailReadAt"/> has failed, then fails with EIO itself; unless its token can be
    /// cancelled, in which case it waits for the cancellation and ends with it (a request that
    /// a copier stopping on the other failure cancels before it completes).
    /// </summary>
    public long? SlowFailReadAt { get; set; }

    private readonly TaskCompletionSource _otherReadFailed = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Block-status queries starting at or past this offset fail with EIO.</summary>
    public long? FailStatusFrom { get; set; }

    /// <summary>Writes overlapping this offset fail with EIO.</summary>
    public long? FailWriteAt { get; set; }

    /// <summary>Writes overlapping this offset throw a non-I/O exception (a bug, not a disk error).</summary>
    public long? CrashWriteAt { get; set; }

    public int Flushes { get; private set; }

    public byte[] Contents => _data;

    public override string DriverName => "memory";
    public override bool IsProtocol => true;
    public override IChildPermissionRule PermissionRule => LeafChildPermissionRule.Instance;
    public override long Length => _data.Length;

    /// <summary>Fills a range with data (allocating it) without logging.</summary>
    public void Fill(long offset, ReadOnlySpan<byte> data)
    {
        data.CopyTo(_data.AsSpan((int)offset));
        Mark(offset, data.Length, true);
    }

    public bool IsAllocated(long offset) => _allocated[offset / Sector];

    public override ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        if (Hits(SlowFailReadAt, offset, buffer.Length)) return SlowFailAsync(cancellationToken);
        if (Hits(FailReadAt, offset, buffer.Length))
        {
            _otherReadFailed.TrySetResult();
            throw new NativeIOException(Errno.EIO, "Input/output error");
        }
        _data.AsSpan((int)offset, buffer.Length).CopyTo(buffer.Span);
        return ValueTask.CompletedTask;
    }

    private async ValueTask SlowFailAsync(CancellationToken cancellationToken)
    {
        await _otherReadFailed.Task.ConfigureAwait(false);
        if (cancellationToken.CanBeCanceled) await Task.Delay(Timeout.Infinite, cancellationToken).ConfigureAwait(false);
        throw new NativeIOException(Errno.EIO, "Input/output error");
    }

    public override async ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default)
    {
        await Task.Yield(); // like a thread-pool write: the caller's other requests run meanwhile
        if (Hits(CrashWriteAt, offset, data.Length)) throw new InvalidOperationException("simulated bug");
        if (Hits(FailWriteAt, offset, data.Length)) throw new NativeIOException(Errno.EIO, "Input/output error");
        lock (_gate)
        {
            data.Span.CopyTo(_data.AsSpan((int)offset));
            Mark(offset, data.Length, true);
            Log.Add((offset, data.Length, "write"));
        }
    }

    public override ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags flags = ZeroFlags.None, CancellationToken cancellationToken = default)
    {
        lock (_gate)
        {
            _data.AsSpan((int)offset, (int)length).Clear();
            Mark(offset, length, false);
            Log.Add((offset, length, "zero"));
        }
        return ValueTask.CompletedTask;
    }

    public override ValueTask DiscardAsync(long offset, long length, CancellationToken cancellationToken = default) =>
        WriteZeroesAsync(offset, length, ZeroFlags.MayUnmap, cancellationToken);

    public override ValueTask FlushAsync(CancellationToken cancellationToken = default)
    {
        Flushes++;
        return ValueTask.CompletedTask;
    }

    public override ValueTask<BlockStatus> GetBlockStatusAsync(long offset, long length, CancellationToken cancellationToken = default)
    {
        if (offset >= FailStatusFrom) throw new NativeIOException(Errno.EIO, "Input/output error");
        long sector = offset / Sector;
        bool allocated = _allocated[sector];
        long end = sector + 1;
        long last = (Math.Min(offset + length, Length) + Sector - 1) / Sector;
        while (end < last && _allocated[end] == allocated) end++;
        long run = Math.Min(end * Sector, offset + length) - offset;
        var flags = allocated ? BlockStatusFlags.Data | BlockStatusFlags.Allocated : BlockStatusFlags.Zero | BlockStatusFlags.Allocated;
        return ValueTask.FromResult(new BlockStatus(run, flags));
    }

    /// <summary>Attaches a user that may read and write.</summary>
    public DiskImage Open()
    {
        var graph = new BlockGraph();
        graph.Add(this);
        return DiskImage.Attach(this, new PermissionPair(BlockPermission.ConsistentRead | BlockPermission.Write, BlockPermission.All), graph);
    }

    private void Mark(long offset, long length, bool allocated)
    {
        for (long s = offset / Sector; s < (offset + length + Sector - 1) / Sector; s++) _allocated[s] = allocated;
    }

    private static bool Hits(long? at, long offset, long length) => at is { } a && a >= offset && a < offset + length;
}
