using CsCheck;
using Vdisk.Graph;
using Vdisk.Native;
using Vdisk.Permissions;
using Xunit;

namespace Vdisk.Tests.Graph;

/// <summary>The one block-status walk (<see cref="BlockExtents.WalkAsync"/>) over fake nodes with generated extent maps.</summary>
public sealed class BlockExtentsTests
{
    private const int Sector = 512;

    /// <summary>
    /// A format node whose status is a per-sector map (null = unallocated, left to the backing
    /// node). Answers stop at the end of a run of equal sectors, at the query's end, and after at
    /// most <see cref="MaxAnswer"/> sectors (drivers cut answers at table boundaries).
    /// </summary>
    private sealed class MapNode : BlockNode
    {
        private readonly BlockStatusFlags?[] _map;

        public MapNode(BlockStatusFlags?[] map, int maxAnswer, BlockNode? backing) : base("map", NodeFlags.ReadWrite, "map")
        {
            _map = map;
            MaxAnswer = maxAnswer;
            if (backing is not null) AttachChild("backing", backing, ChildRole.Cow);
        }

        public int MaxAnswer { get; }
        public long? ZeroAnswerAt { get; set; }
        public long? FailAt { get; set; }
        public List<(long Offset, long Length)> Queries { get; } = new();
        public BlockStatusFlags? At(long sector) => _map[sector];

        public override string DriverName => "map";
        public override bool IsProtocol => false;
        public override IChildPermissionRule PermissionRule => DefaultChildPermissionRule.Instance;
        public override long Length => (long)_map.Length * Sector;

        public override ValueTask<BlockStatus> GetBlockStatusAsync(long offset, long length, CancellationToken cancellationToken = default)
        {
            Queries.Add((offset, length));
            if (FailAt is long f && offset >= f) throw new NativeIOException(Errno.EIO, "Input/output error");
            if (ZeroAnswerAt == offset) return ValueTask.FromResult(new BlockStatus(0, BlockStatusFlags.Data | BlockStatusFlags.Allocated));
            long first = offset / Sector, last = first + 1;
            while (last < _map.Length && last - first < MaxAnswer && _map[last] == _map[first]) last++;
            long run = Math.Min(last * Sector, offset + length) - offset;
            return ValueTask.FromResult(new BlockStatus(run, _map[first] ?? BlockStatusFlags.None));
        }

        public override ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken = default) => throw new NotSupportedException();
        public override ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default) => throw new NotSupportedException();
        public override ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags flags = ZeroFlags.None, CancellationToken cancellationToken = default) => throw new NotSupportedException();
        public override ValueTask DiscardAsync(long offset, long length, CancellationToken cancellationToken = default) => throw new NotSupportedException();
        public override ValueTask FlushAsync(CancellationToken cancellationToken = default) => ValueTask.CompletedTask;
    }

    private static readonly BlockStatusFlags?[] Kinds =
    [
        null,
        BlockStatusFlags.Data | BlockStatusFlags.Allocated,
        BlockStatusFlags.Zero | BlockStatusFlags.Allocated,
        BlockStatusFlags.Data | BlockStatusFlags.Zero | BlockStatusFlags.Allocated,
    ];

    /// <summary>A sector map of 1..40 sectors, in runs, and a node answering at most 1..8 sectors at a time.</summary>
    private static readonly Gen<(BlockStatusFlags?[] Map, int MaxAnswer)> GenLayer =
        Gen.Select(Gen.Int[0, Kinds.Length - 1], Gen.Int[1, 6]).Array[1, 10]
            .Select(runs => runs.SelectMany(r => Enumerable.Repeat(Kinds[r.Item1], r.Item2)).Take(40).ToArray())
            .Select(Gen.Int[1, 8]);

    /// <summary>A chain of one to three layers, top first.</summary>
    private static readonly Gen<MapNode[]> GenChain =
        GenLayer.Array[1, 3].Select(layers =>
        {
            var nodes = new MapNode[layers.Length];
            for (int i = layers.Length - 1; i >= 0; i--)
                nodes[i] = new MapNode(layers[i].Map, layers[i].MaxAnswer, i + 1 < layers.Length ? nodes[i + 1] : null);
            return nodes;
        });

    /// <summary>A chain and a range [first, first + count) of sectors of its top.</summary>
    private static readonly Gen<(MapNode[] Chain, int First, int Count)> GenChainAndRange =
        GenChain.SelectMany(chain => Gen.Int[0, (int)(chain[0].Length / Sector) - 1].SelectMany(first =>
            Gen.Int[0, (int)(chain[0].Length / Sector) - first].Select(count => (chain, first, count))));

    private static async Task<List<Extent>> WalkAsync(BlockNode node, long offset, long length, ExtentScope scope, long limit = long.MaxValue)
    {
        var list = new List<Extent>();
        await foreach (var e in BlockExtents.WalkAsync(node, offset, length, scope, limit)) list.Add(e);
        return list;
    }

    /// <summary>The model of bdrv_block_status_above for one sector: the first layer holding it, else zeroes.</summary>
    private static (BlockStatusFlags Flags, int Depth) ChainModel(MapNode[] chain, long sector)
    {
        for (int depth = 0; ; depth++)
        {
            if (chain[depth].At(sector) is { } flags) return (flags, depth);
            if (depth + 1 == chain.Length) return (BlockStatusFlags.Zero, depth);
            if (sector * Sector >= chain[depth + 1].Length) return (BlockStatusFlags.Zero, depth + 1);
        }
    }

    /// <summary>Extents are non-empty, in order, back to back, and cover exactly [offset, end).</summary>
    private static void AssertCovers(List<Extent> extents, long offset, long end)
    {
        long position = offset;
        foreach (var e in extents)
        {
            Assert.Equal(position, e.Offset);
            Assert.True(e.Length > 0, $"empty extent at {e.Offset}");
            position = e.End;
        }
        Assert.Equal(end, position);
    }

    [Fact]
    public void Node_walk_covers_the_range_once_in_order_and_each_extent_has_the_status_of_every_sector_in_it()
    {
        GenChainAndRange.Sample(sample =>
        {
            var (chain, first, count) = sample;
            var top = chain[0];
            long offset = (long)first * Sector, end = offset + (long)count * Sector;
            var extents = WalkAsync(top, offset, end - offset, ExtentScope.Node).GetAwaiter().GetResult();
            AssertCovers(extents, offset, end);
            foreach (var e in extents)
            {
                Assert.Equal(0, e.Depth);
                for (long s = e.Offset / Sector; s < e.End / Sector; s++)
                    Assert.Equal(top.At(s) ?? BlockStatusFlags.None, e.Flags);
            }
        });
    }

    [Fact]
    public void Chain_walk_reports_the_layer_each_sector_comes_from_and_zeroes_past_a_short_backing_file()
    {
        GenChainAndRange.Sample(sample =>
        {
            var (chain, first, count) = sample;
            long offset = (long)first * Sector, end = offset + (long)count * Sector;
            var extents = WalkAsync(chain[0], offset, end - offset, ExtentScope.Chain).GetAwaiter().GetResult();
            AssertCovers(extents, offset, end);
            foreach (var e in extents)
                for (long s = e.Offset / Sector; s < e.End / Sector; s++)
                    Assert.Equal(ChainModel(chain, s), (e.Flags, e.Depth));
        });
    }

    [Fact]
    public void No_query_asks_past_the_range_or_the_limit_and_sub_sector_ranges_are_covered()
    {
        Gen.Select(GenChain, Gen.Int[0, 4000], Gen.Int[0, 9000], Gen.Int[1, 3000]).Sample((chain, from, count, limit) =>
        {
            var top = chain[0];
            long offset = Math.Min(from, top.Length), end = Math.Min(top.Length, offset + count);
            var extents = WalkAsync(top, offset, end - offset, ExtentScope.Chain, limit).GetAwaiter().GetResult();
            AssertCovers(extents, offset, end);
            Assert.All(top.Queries, q => Assert.True(q.Length <= limit && q.Offset + q.Length <= end, $"query {q} past limit {limit} or end {end}"));
        });
    }

    [Fact]
    public void A_zero_length_answer_inside_the_range_ends_the_walk_with_EIO_after_the_extents_before_it()
    {
        GenLayer.SelectMany(layer => Gen.Int[0, layer.Map.Length - 1].Select(at => (layer, at))).Sample(sample =>
        {
            var (layer, at) = sample;
            var seen = new List<Extent>();
            // One sector per answer, so that an answer starts at every sector boundary.
            var oneAtATime = new MapNode(layer.Map, 1, null) { ZeroAnswerAt = (long)at * Sector };
            var error = Assert.Throws<NativeIOException>(() =>
            {
                var e = BlockExtents.WalkAsync(oneAtATime, 0, oneAtATime.Length, ExtentScope.Node).GetAsyncEnumerator();
                while (e.MoveNextAsync().AsTask().GetAwaiter().GetResult()) seen.Add(e.Current);
            });
            Assert.Equal(Errno.EIO, error.Errno);
            Assert.Equal(BlockExtents.UnexpectedEnd, error.Message);
            AssertCovers(seen, 0, (long)at * Sector);
            Assert.Equal((long)at * Sector, oneAtATime.Queries[^1].Offset);
        });
    }

    [Fact]
    public async Task A_failed_answer_ends_the_walk_with_that_error_after_the_extents_before_it()
    {
        var node = new MapNode([Kinds[1], Kinds[1], Kinds[2], Kinds[0], Kinds[0]], 1, null) { FailAt = 3 * Sector };
        var seen = new List<Extent>();
        var error = await Assert.ThrowsAsync<NativeIOException>(async () =>
        {
            await foreach (var e in BlockExtents.WalkAsync(node, 0, node.Length, ExtentScope.Node)) seen.Add(e);
        });
        Assert.Equal("Input/output error", error.Message);
        AssertCovers(seen, 0, 3 * Sector);
    }

    [Fact]
    public async Task Cancellation_stops_the_walk_before_the_next_query()
    {
        var node = new MapNode(Enumerable.Repeat(Kinds[1], 10).ToArray(), 1, null);
        using var cancel = new CancellationTokenSource();
        var seen = new List<Extent>();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (var e in BlockExtents.WalkAsync(node, 0, node.Length, ExtentScope.Node).WithCancellation(cancel.Token))
            {
                seen.Add(e);
                if (seen.Count == 3) cancel.Cancel();
            }
        });
        Assert.Equal(3, seen.Count);
        Assert.Equal(3, node.Queries.Count);
    }

    [Fact]
    public async Task Allocated_above_stops_at_the_base_and_reports_the_layer_holding_the_range()
    {
        // base: data everywhere; middle: zero at sector 1; top: data at sector 3.
        var baseNode = new MapNode(Enumerable.Repeat(Kinds[1], 5).ToArray(), 8, null);
        var middle = new MapNode([null, Kinds[2], null, null, null], 8, baseNode);
        var top = new MapNode([null, null, null, Kinds[1], null], 8, middle);
        var extents = new List<Extent>();
        await foreach (var e in BlockExtents.WalkAsync(top, 0, top.Length, ExtentScope.AllocatedAbove, baseNode: baseNode)) extents.Add(e);
        Assert.Equal(
        [
            new Extent(0, Sector, BlockStatusFlags.None, 2),
            new Extent(Sector, Sector, BlockStatusFlags.Allocated | BlockStatusFlags.Zero, 1),
            new Extent(2 * Sector, Sector, BlockStatusFlags.None, 2),
            new Extent(3 * Sector, Sector, BlockStatusFlags.Allocated, 0),
            new Extent(4 * Sector, Sector, BlockStatusFlags.None, 2),
        ], extents);
    }
}
