using CsCheck;
using Vdisk.Drivers.Qcow2;
using Vdisk.Graph;
using Vdisk.Permissions;
using Xunit;

namespace Vdisk.Tests.Qcow2;

/// <summary>
/// Crash safety of the qcow2 metadata write order with freed clusters reused at once: every
/// write of the image file is recorded between flushes, and every state a crash can leave
/// (everything before some flush, plus any subset of the writes after it, as a disk may persist
/// unsynced writes in any order) must check without corruption: no table may point at a cluster
/// whose refcount on disk is 0 (it could be handed out again), or lower than its references.
/// Leaks are allowed.
/// </summary>
public sealed class Qcow2CrashOrderTests : IDisposable
{
    private const int Cluster = 4096;
    private readonly ScratchImages _images = new("vdisk-crashorder-");

    public void Dispose() => _images.Dispose();

    /// <summary>A fresh 4 MiB image with 4 KiB clusters (two L2 tables), as bytes.</summary>
    private async Task<byte[]> FreshImageAsync()
    {
        string path = await _images.CreateAsync($"t{Guid.NewGuid():N}.qcow2", "qcow2", "4M",
            ("cluster_size", Cluster.ToString(System.Globalization.CultureInfo.InvariantCulture)));
        return await File.ReadAllBytesAsync(path);
    }

    private abstract record Step;
    private sealed record Write(long Offset, int Length, byte Pattern) : Step;
    private sealed record Discard(long Offset, int Length) : Step;
    private sealed record ZeroUnmap(long Offset, int Length) : Step;
    private sealed record Flush : Step;

    /// <summary>Runs the steps on the image in a recording file; returns the file's log.</summary>
    private static async Task<(byte[] Initial, List<RecordingFile.Op> Log)> RunAsync(byte[] image, IEnumerable<Step> steps)
    {
        var file = new RecordingFile(image);
        var node = await Qcow2Node.OpenAsync("crash", NodeFlags.ReadWrite, OpenFlags.ReadWrite, file);
        foreach (var step in steps)
        {
            switch (step)
            {
                case Write w:
                    await node.WriteAsync(w.Offset, Enumerable.Repeat(w.Pattern, w.Length).ToArray());
                    break;
                case Discard d:
                    await node.DiscardAsync(d.Offset, d.Length);
                    break;
                case ZeroUnmap z:
                    await node.WriteZeroesAsync(z.Offset, z.Length, ZeroFlags.MayUnmap);
                    break;
                case Flush:
                    await node.FlushAsync();
                    break;
            }
        }
        await node.CloseAsync();
        return (image, file.Log);
    }

    /// <summary>Every crash state of the log checks without corruption; returns how many states were checked.</summary>
    private static async Task<int> AssertEveryCrashStateConsistentAsync(byte[] initial, List<RecordingFile.Op> log)
    {
        var epochs = new List<List<RecordingFile.Op>> { new() };
        foreach (var op in log)
        {
            if (op.Kind == RecordingFile.OpKind.Flush) epochs.Add(new());
            else epochs[^1].Add(op);
        }
        var durable = new RecordingFile(initial);
        int states = 0;
        foreach (var epoch in epochs)
        {
            foreach (var subset in CrashSubsets(epoch.Count))
            {
                var state = durable.Copy();
                for (int i = 0; i < epoch.Count; i++)
                    if (subset[i]) state.Apply(epoch[i]);
                await AssertConsistentAsync(state, () => $"after {states} states, epoch of {epoch.Count} writes, persisted: {string.Join(",", Enumerable.Range(0, epoch.Count).Where(i => subset[i]).Select(i => epoch[i]))}");
                states++;
            }
            foreach (var op in epoch) durable.Apply(op);
        }
        return states;
    }

    /// <summary>
    /// Which writes of an epoch persist: every subset when there are few, else every prefix,
    /// every prefix with one more write from later, and every single write left out.
    /// </summary>
    private static IEnumerable<bool[]> CrashSubsets(int n)
    {
        if (n <= 10)
        {
            for (int mask = 0; mask < 1 << n; mask++)
                yield return Enumerable.Range(0, n).Select(i => (mask & (1 << i)) != 0).ToArray();
            yield break;
        }
        for (int k = 0; k <= n; k++)
        {
            yield return Enumerable.Range(0, n).Select(i => i < k).ToArray();
            for (int j = k + 1; j < n; j++) yield return Enumerable.Range(0, n).Select(i => i < k || i == j).ToArray();
        }
        for (int k = 0; k < n; k++) yield return Enumerable.Range(0, n).Select(i => i != k).ToArray();
    }

    private static async Task AssertConsistentAsync(RecordingFile state, Func<string> context)
    {
        var node = await Qcow2Node.OpenAsync("check", NodeFlags.None, OpenFlags.Check, state);
        var lines = new List<string>();
        var result = await node.CheckAsync(RepairMode.None, lines.Add);
        Assert.True(result.Corruptions == 0 && result.CheckErrors == 0,
            $"crash state with {result.Corruptions} corruptions, {result.CheckErrors} check errors: {context()}\n{string.Join("\n", lines)}");
    }

    /// <summary>
    /// Discarded clusters are reused by the next writes (the freed refcounts are lowered at once),
    /// in the same L2 table and across the two tables, between and without flushes.
    /// </summary>
    [Fact]
    public async Task Reusing_freed_clusters_leaves_no_crash_state_with_a_reference_to_a_free_cluster()
    {
        var image = await FreshImageAsync();
        var steps = new Step[]
        {
            new Write(0, 16 * Cluster, 1),
            new Write(2 << 20, 4 * Cluster, 2),
            new Flush(),
            new Discard(0, 8 * Cluster),
            new Write(1 << 20, 8 * Cluster, 3),
            new Flush(),
            new Discard(2 << 20, 4 * Cluster),
            new Write(64 * Cluster, 4 * Cluster, 4),
            new ZeroUnmap(8 * Cluster, 4 * Cluster),
            new Write(3 << 20, 4 * Cluster, 5),
        };
        var (initial, log) = await RunAsync(image, steps);
        int states = await AssertEveryCrashStateConsistentAsync(initial, log);
        Assert.True(states > 10, $"only {states} crash states");
    }

    /// <summary>The same over random sequences of writes, discards, unmapping zero writes and flushes.</summary>
    [Fact]
    public async Task Random_workloads_leave_no_crash_state_with_a_reference_to_a_free_cluster()
    {
        var image = await FreshImageAsync();
        // Cluster-aligned ranges over both L2 tables (2 MiB each), a few clusters long.
        var range = Gen.Select(Gen.Int[0, 1023 - 8], Gen.Int[1, 8], (c, n) => ((long)c * Cluster, n * Cluster));
        var step = Gen.Frequency(
            (4, Gen.Select(range, Gen.Byte[1, 255], (r, p) => (Step)new Write(r.Item1, r.Item2, p))),
            (2, range.Select(r => (Step)new Discard(r.Item1, r.Item2))),
            (1, range.Select(r => (Step)new ZeroUnmap(r.Item1, r.Item2))),
            (1, Gen.Const((Step)new Flush())));
        step.Array[4, 14].Sample(steps =>
        {
            var (initial, log) = RunAsync(image, steps).GetAwaiter().GetResult();
            AssertEveryCrashStateConsistentAsync(initial, log).GetAwaiter().GetResult();
        }, iter: 150, threads: 1);
    }

    /// <summary>
    /// An in-memory image file that records its writes, zeroings, discards, truncations and
    /// flushes in order, and can replay any of them onto a copy.
    /// </summary>
    private sealed class RecordingFile(byte[] initial) : BlockNode("mem", NodeFlags.ReadWrite, "mem")
    {
        public enum OpKind { Write, Zero, Truncate, Flush }

        public sealed record Op(OpKind Kind, long Offset, long Length, byte[]? Data)
        {
            public override string ToString() => $"{Kind}@{Offset:x}+{Length:x}";
        }

        private byte[] _data = (byte[])initial.Clone();
        private long _length = initial.Length;

        public List<Op> Log { get; } = new();

        public RecordingFile Copy()
        {
            var copy = new RecordingFile(_data.AsSpan(0, (int)_length).ToArray());
            return copy;
        }

        public void Apply(Op op)
        {
            switch (op.Kind)
            {
                case OpKind.Write:
                    Put(op.Offset, op.Data!);
                    break;
                case OpKind.Zero:
                    Put(op.Offset, new byte[op.Length]);
                    break;
                case OpKind.Truncate:
                    Resize(op.Length);
                    break;
            }
        }

        private void Put(long offset, byte[] data)
        {
            if (offset + data.Length > _length) Resize(offset + data.Length);
            data.CopyTo(_data, offset);
        }

        private void Resize(long length)
        {
            if (length > _data.Length) Array.Resize(ref _data, (int)Math.Max(length, _data.Length * 2L));
            if (length < _length) Array.Clear(_data, (int)length, (int)(_length - length));
            _length = length;
        }

        public override string DriverName => "memory";
        public override bool IsProtocol => true;
        public override IChildPermissionRule PermissionRule => LeafChildPermissionRule.Instance;
        public override long Length => _length;
        public override long? AllocatedSize => null;

        public override ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            buffer.Span.Clear();
            long available = Math.Clamp(_length - offset, 0, buffer.Length);
            _data.AsSpan((int)offset, (int)available).CopyTo(buffer.Span);
            return ValueTask.CompletedTask;
        }

        public override ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default)
        {
            Record(new Op(OpKind.Write, offset, data.Length, data.ToArray()));
            return ValueTask.CompletedTask;
        }

        public override ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags flags = ZeroFlags.None, CancellationToken cancellationToken = default)
        {
            Record(new Op(OpKind.Zero, offset, length, null));
            return ValueTask.CompletedTask;
        }

        public override ValueTask DiscardAsync(long offset, long length, CancellationToken cancellationToken = default) =>
            WriteZeroesAsync(offset, length, ZeroFlags.MayUnmap, cancellationToken);

        public override ValueTask TruncateAsync(long length, CancellationToken cancellationToken = default)
        {
            Record(new Op(OpKind.Truncate, 0, length, null));
            return ValueTask.CompletedTask;
        }

        public override ValueTask FlushAsync(CancellationToken cancellationToken = default)
        {
            Log.Add(new Op(OpKind.Flush, 0, 0, null));
            return ValueTask.CompletedTask;
        }

        private void Record(Op op)
        {
            Log.Add(op);
            Apply(op);
        }

        public override ValueTask<BlockStatus> GetBlockStatusAsync(long offset, long length, CancellationToken cancellationToken = default) =>
            ValueTask.FromResult(new BlockStatus(length, BlockStatusFlags.Data | BlockStatusFlags.Allocated));
    }
}
