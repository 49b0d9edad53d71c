using Vdisk.Copy;
using Vdisk.Graph;
using Vdisk.Permissions;
using Xunit;

namespace Vdisk.Tests.Copy;

public class CopyPlannerTests
{
    private const int K = 1024, M = 1024 * 1024;

    private static async Task<List<(long Target, long Length, CopySegmentKind Kind)>> PlanAsync(CopyPlanner planner)
    {
        var plan = new List<(long, long, CopySegmentKind)>();
        long expected = 0;
        while (await planner.NextAsync() is { } s)
        {
            Assert.Equal(expected++, s.Sequence);
            plan.Add((s.TargetOffset, s.Length, s.Kind));
        }
        return plan;
    }

    /// <summary>8 MiB: data [0, 3M+4K), hole, data [6M, 6M+512), hole.</summary>
    private static MemoryNode Mixed()
    {
        var node = new MemoryNode("src", 8 * M);
        node.Fill(0, Enumerable.Repeat((byte)1, 3 * M + 4 * K).ToArray());
        node.Fill(6 * M, Enumerable.Repeat((byte)2, 512).ToArray());
        return node;
    }

    [Fact]
    public async Task Data_is_cut_at_chunk_boundaries_and_holes_are_one_request()
    {
        var plan = await PlanAsync(new CopyPlanner([Mixed()], chunkSize: M));
        Assert.Equal(
        [
            (0, M, CopySegmentKind.Data), (M, M, CopySegmentKind.Data), (2 * M, M, CopySegmentKind.Data),
            (3 * M, 4 * K, CopySegmentKind.Data), (3 * M + 4 * K, 3 * M - 4 * K, CopySegmentKind.Zero),
            (6 * M, 512, CopySegmentKind.Data), (6 * M + 512, 2 * M - 512, CopySegmentKind.Zero),
        ], plan);
    }

    [Fact]
    public async Task With_an_alignment_data_widens_and_zero_ranges_narrow_to_whole_units()
    {
        var plan = await PlanAsync(new CopyPlanner([Mixed()], chunkSize: M, alignment: 64 * K));
        Assert.Equal(
        [
            (0, M, CopySegmentKind.Data), (M, M, CopySegmentKind.Data), (2 * M, M, CopySegmentKind.Data),
            (3 * M, 64 * K, CopySegmentKind.Data), (3 * M + 64 * K, 3 * M - 64 * K, CopySegmentKind.Zero),
            (6 * M, 64 * K, CopySegmentKind.Data), (6 * M + 64 * K, 2 * M - 64 * K, CopySegmentKind.Zero),
        ], plan);
    }

    [Fact]
    public async Task Zero_ranges_can_be_chunked_like_data()
    {
        var node = new MemoryNode("src", 3 * M);
        var plan = await PlanAsync(new CopyPlanner([node], chunkSize: M, chunkZeroes: true));
        Assert.Equal([(0, M, CopySegmentKind.Zero), (M, M, CopySegmentKind.Zero), (2 * M, M, CopySegmentKind.Zero)], plan);
    }

    [Fact]
    public async Task Sources_are_laid_end_to_end_with_chunks_aligned_in_the_target()
    {
        var a = new MemoryNode("a", 3 * M / 2);
        var b = new MemoryNode("b", 3 * M / 2);
        a.Fill(0, new byte[3 * M / 2]);
        b.Fill(0, new byte[3 * M / 2]);
        var planner = new CopyPlanner([a, b], chunkSize: M);
        var segments = new List<CopySegment>();
        while (await planner.NextAsync() is { } s) segments.Add(s);
        Assert.Equal(
        [
            new CopySegment(0, 0, 0, 0, M, CopySegmentKind.Data),
            new CopySegment(1, 0, M, M, M / 2, CopySegmentKind.Data),
            new CopySegment(2, 1, 0, 3 * M / 2, M / 2, CopySegmentKind.Data),
            new CopySegment(3, 1, M / 2, 2 * M, M, CopySegmentKind.Data),
        ], segments);
    }

    [Fact]
    public async Task Top_only_without_a_backing_file_zeroes_what_the_source_does_not_hold()
    {
        // convert -B with a source that has no backing file: its unallocated ranges read as
        // zeroes, so the target (whose new backing file may hold data) must get zeroes there.
        var source = new OverlayNode("top", 4 * M);
        source.Fill(0, Enumerable.Repeat((byte)1, 64 * K).ToArray());
        var plan = await PlanAsync(new CopyPlanner([source], chunkSize: M, topOnly: true));
        Assert.Equal([(0, 64 * K, CopySegmentKind.Data), (64 * K, 4 * M - 64 * K, CopySegmentKind.Zero)], plan);
    }

    [Fact]
    public async Task Top_only_leaves_to_the_backing_file_only_what_the_sources_backing_file_covers()
    {
        var backing = new MemoryNode("base", 2 * M);
        backing.Fill(0, Enumerable.Repeat((byte)7, 2 * M).ToArray());
        var source = new OverlayNode("top", 4 * M, backing);
        source.Fill(M, Enumerable.Repeat((byte)1, 64 * K).ToArray());
        var plan = await PlanAsync(new CopyPlanner([source], chunkSize: M, topOnly: true));
        Assert.Equal(
        [
            (0, M, CopySegmentKind.Skip), (M, 64 * K, CopySegmentKind.Data),
            (M + 64 * K, M - 64 * K, CopySegmentKind.Skip), (2 * M, 2 * M, CopySegmentKind.Zero),
        ], plan);
    }

    [Fact]
    public async Task A_long_extent_costs_one_block_status_query()
    {
        var node = new CountingNode(new MemoryNode("src", 64 * M));
        node.Inner.Fill(0, new byte[64 * M]);
        var plan = await PlanAsync(new CopyPlanner([node], chunkSize: 2 * M));
        Assert.Equal(32, plan.Count);
        Assert.Equal(1, node.StatusQueries);
    }

    /// <summary>Counts block-status queries made of a memory node.</summary>
    private sealed class CountingNode(MemoryNode inner) : BlockNode("counting", NodeFlags.None, "counting")
    {
        public MemoryNode Inner => inner;
        public int StatusQueries { get; private set; }
        public override string DriverName => "counting";
        public override bool IsProtocol => true;
        public override IChildPermissionRule PermissionRule => LeafChildPermissionRule.Instance;
        public override long Length => inner.Length;
        public override ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken = default) => inner.ReadAsync(offset, buffer, cancellationToken);
        public override ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default) => inner.WriteAsync(offset, data, flags, cancellationToken);
        public override ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags flags = ZeroFlags.None, CancellationToken cancellationToken = default) => inner.WriteZeroesAsync(offset, length, flags, cancellationToken);
        public override ValueTask DiscardAsync(long offset, long length, CancellationToken cancellationToken = default) => inner.DiscardAsync(offset, length, cancellationToken);
        public override ValueTask FlushAsync(CancellationToken cancellationToken = default) => inner.FlushAsync(cancellationToken);

        public override ValueTask<BlockStatus> GetBlockStatusAsync(long offset, long length, CancellationToken cancellationToken = default)
        {
            StatusQueries++;
            return inner.GetBlockStatusAsync(offset, length, cancellationToken);
        }
    }
}
