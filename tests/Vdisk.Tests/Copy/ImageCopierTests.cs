using Vdisk.Copy;
using Vdisk.TestSupport;
using Xunit;

namespace Vdisk.Tests.Copy;

public class ImageCopierTests
{
    private const int K = 1024, M = 1024 * 1024;
    private const int Chunk = 64 * K;

    /// <summary>
    /// 4 MiB of mixed regions: random data, allocated zeroes inside and between data, holes,
    /// boundaries off the chunk grid.
    /// </summary>
    private static MemoryNode MixedSource()
    {
        var node = new MemoryNode("src", 4 * M);
        void Data(long offset, int length) => node.Fill(offset, DeterministicData.Bytes(length, $"mixed source at {offset}"));
        Data(0, 300 * K);
        node.Fill(100 * K, new byte[8 * K]);      // allocated zeroes inside data
        Data(512 * K + 512, 1 * M);               // starts off the grid
        node.Fill(2 * M, new byte[256 * K]);      // an allocated all-zero region
        Data(3 * M + 4 * K, 100 * K);
        return node;
    }

    private static async Task<(MemoryNode Target, CopyFailure? Failure)> CopyAsync(MemoryNode source, CopyOptions options, Action<MemoryNode>? setUp = null)
    {
        var target = new MemoryNode("dst", source.Length);
        setUp?.Invoke(target);
        using var src = source.Open();
        using var dst = target.Open();
        var failure = await new ImageCopier([src], dst, options with { ChunkSize = Chunk }).RunAsync();
        return (target, failure);
    }

    [Fact]
    public async Task Copies_every_byte_writing_in_guest_order_and_leaving_zeroes_as_holes()
    {
        var source = MixedSource();
        var (target, failure) = await CopyAsync(source, new CopyOptions { TargetIsZero = true, Parallel = 8 });
        Assert.Null(failure);
        Assert.Equal(source.Contents, target.Contents);
        Assert.All(target.Log, e => Assert.Equal("write", e.Kind));
        Assert.Equal(target.Log.OrderBy(e => e.Offset), target.Log);
        Assert.False(target.IsAllocated(100 * K));          // zero block inside data
        Assert.False(target.IsAllocated(2 * M + 128 * K));  // allocated zeroes in the source
        Assert.True(target.IsAllocated(512 * K + 512));
        Assert.Equal(1, target.Flushes);
    }

    [Fact]
    public async Task An_existing_target_gets_its_zero_ranges_zeroed()
    {
        var source = MixedSource();
        var (target, failure) = await CopyAsync(source, new CopyOptions { TargetIsZero = false },
            t => t.Fill(0, Enumerable.Repeat((byte)0xee, 4 * M).ToArray()));
        Assert.Null(failure);
        Assert.Equal(source.Contents, target.Contents);
        Assert.Contains(target.Log, e => e.Kind == "zero");
    }

    [Fact]
    public async Task Without_sparse_detection_every_byte_is_written_as_data()
    {
        var source = MixedSource();
        var (target, failure) = await CopyAsync(source, new CopyOptions { TargetIsZero = true, MinSparse = 0 });
        Assert.Null(failure);
        Assert.Equal(source.Contents, target.Contents);
        Assert.All(target.Log, e => Assert.Equal("write", e.Kind));
        Assert.Equal(4L * M, target.Log.Sum(e => e.Length));
    }

    [Theory]
    [InlineData(1, false)]
    [InlineData(3, false)]
    [InlineData(16, true)]
    public async Task Any_parallelism_and_write_order_give_the_same_contents(int parallel, bool outOfOrder)
    {
        var source = MixedSource();
        var (target, failure) = await CopyAsync(source, new CopyOptions { TargetIsZero = true, Parallel = parallel, OutOfOrder = outOfOrder });
        Assert.Null(failure);
        Assert.Equal(source.Contents, target.Contents);
    }

    [Fact]
    public async Task Several_sources_are_copied_end_to_end()
    {
        var a = MixedSource();
        var b = new MemoryNode("b", 1 * M + 512);
        b.Fill(1000, Enumerable.Repeat((byte)7, 5000).ToArray());
        var target = new MemoryNode("dst", a.Length + b.Length);
        using (var sa = a.Open())
        using (var sb = b.Open())
        using (var dst = target.Open())
            Assert.Null(await new ImageCopier([sa, sb], dst, new CopyOptions { TargetIsZero = true, ChunkSize = Chunk }).RunAsync());
        Assert.Equal(a.Contents.Concat(b.Contents), target.Contents);
    }

    [Fact]
    public async Task A_read_error_stops_the_copy_and_names_the_request_offset()
    {
        var source = new MemoryNode("src", 2 * M);
        source.Fill(0, Enumerable.Repeat((byte)3, 2 * M).ToArray());
        source.FailReadAt = 5 * Chunk + 100;
        var (target, failure) = await CopyAsync(source, new CopyOptions { TargetIsZero = true });
        Assert.NotNull(failure);
        Assert.Equal(CopyStep.Read, failure.Step);
        Assert.Equal(5 * Chunk, failure.Offset);
        Assert.Equal(0, target.Flushes);
    }

    /// <summary>
    /// Two reads fail, the later one first: the copy still names the earlier one, as qemu-img
    /// does (its requests on a node run in the order they were issued). Stopping after the
    /// first failure must not cancel the earlier read still in flight (vmdk convert named
    /// byte 131072 where qemu-img names 0).
    /// </summary>
    [Fact]
    public async Task Of_two_failing_reads_the_lower_offset_is_named_even_when_it_fails_last()
    {
        var source = new MemoryNode("src", 2 * M);
        source.Fill(0, Enumerable.Repeat((byte)3, 2 * M).ToArray());
        source.SlowFailReadAt = 1 * Chunk + 100;
        source.FailReadAt = 3 * Chunk + 100;
        var (_, failure) = await CopyAsync(source, new CopyOptions { TargetIsZero = true, Parallel = 8 });
        Assert.NotNull(failure);
        Assert.Equal(CopyStep.Read, failure.Step);
        Assert.Equal(1 * Chunk, failure.Offset);
    }

    [Fact]
    public async Task A_write_error_stops_the_copy_and_names_the_request_offset()
    {
        var source = new MemoryNode("src", 2 * M);
        source.Fill(0, Enumerable.Repeat((byte)3, 2 * M).ToArray());
        var (target, failure) = await CopyAsync(source, new CopyOptions { TargetIsZero = true }, t => t.FailWriteAt = 7 * Chunk);
        Assert.NotNull(failure);
        Assert.Equal(CopyStep.Write, failure.Step);
        Assert.Equal(7 * Chunk, failure.Offset);
        Assert.DoesNotContain(target.Log, e => e.Offset > 7 * Chunk); // in order: nothing after the failed write
    }

    [Fact]
    public async Task A_block_status_error_stops_the_copy_and_names_where_planning_stood()
    {
        var source = new MemoryNode("src", 2 * M);
        source.Fill(0, Enumerable.Repeat((byte)3, M).ToArray()); // data, then a hole: a second query at 1 MiB
        source.FailStatusFrom = M;
        var (_, failure) = await CopyAsync(source, new CopyOptions { TargetIsZero = true });
        Assert.NotNull(failure);
        Assert.Equal(CopyStep.BlockStatus, failure.Step);
        Assert.Equal(M, failure.Offset);
    }

    [Fact]
    public async Task A_bug_in_one_request_surfaces_instead_of_leaving_the_others_waiting()
    {
        var source = new MemoryNode("src", 2 * M);
        source.Fill(0, Enumerable.Repeat((byte)3, 2 * M).ToArray());
        await Assert.ThrowsAsync<InvalidOperationException>(() =>
            CopyAsync(source, new CopyOptions { TargetIsZero = true }, t => t.CrashWriteAt = 3 * Chunk));
    }

    [Fact]
    public async Task Progress_is_the_share_of_the_data_planned_in_guest_order()
    {
        // 4 data requests of one chunk each around a hole: qemu-img convert counts data only.
        var source = new MemoryNode("src", 8 * Chunk);
        source.Fill(0, Enumerable.Repeat((byte)1, 2 * Chunk).ToArray());
        source.Fill(5 * Chunk, Enumerable.Repeat((byte)2, 2 * Chunk).ToArray());
        var target = new MemoryNode("dst", source.Length);
        var seen = new List<double>();
        using var src = source.Open();
        using var dst = target.Open();
        await new ImageCopier([src], dst, new CopyOptions { TargetIsZero = true, ChunkSize = Chunk, Parallel = 4 }).RunAsync(seen.Add);
        Assert.Equal([25.0, 50.0, 75.0, 100.0], seen);
    }
}
