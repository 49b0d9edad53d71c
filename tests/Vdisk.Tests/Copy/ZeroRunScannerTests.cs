using CsCheck;
using Vdisk.Copy;
using Xunit;

namespace Vdisk.Tests.Copy;

public class ZeroRunScannerTests
{
    private static List<(int Start, int Length, bool Zero)> Scan(byte[] data, int block)
    {
        var runs = new List<(int, int, bool)>();
        var scanner = new ZeroRunScanner(block);
        while (scanner.Next(data, out int start, out int length, out bool zero)) runs.Add((start, length, zero));
        return runs;
    }

    /// <summary>The obvious version: classify each block, then merge neighbours of the same kind.</summary>
    private static List<(int Start, int Length, bool Zero)> Reference(byte[] data, int block)
    {
        var runs = new List<(int Start, int Length, bool Zero)>();
        for (int i = 0; i < data.Length; i += block)
        {
            int n = Math.Min(block, data.Length - i);
            bool zero = data.AsSpan(i, n).ToArray().All(b => b == 0);
            if (runs.Count > 0 && runs[^1].Zero == zero) runs[^1] = (runs[^1].Start, runs[^1].Length + n, zero);
            else runs.Add((i, n, zero));
        }
        return runs;
    }

    [Fact]
    public void Splits_into_maximal_runs_of_aligned_blocks()
    {
        var data = new byte[10 * 4096 + 100];
        data[0] = 1;                 // block 0: data
        data[3 * 4096 + 4095] = 7;   // block 3: data (last byte)
        data[4 * 4096] = 7;          // block 4: data
        data[10 * 4096 + 99] = 9;    // short tail: data
        Assert.Equal(
            [(0, 4096, false), (4096, 2 * 4096, true), (3 * 4096, 2 * 4096, false), (5 * 4096, 5 * 4096, true), (10 * 4096, 100, false)],
            Scan(data, 4096));
    }

    [Fact]
    public void All_zero_and_all_data_buffers_are_one_run()
    {
        Assert.Equal([(0, 65536, true)], Scan(new byte[65536], 4096));
        Assert.Equal([(0, 65536, false)], Scan(Enumerable.Repeat((byte)0xff, 65536).ToArray(), 4096));
        Assert.Empty(Scan([], 4096));
    }

    [Fact]
    public void Block_larger_than_the_buffer_covers_it_whole()
    {
        var data = new byte[1000];
        Assert.Equal([(0, 1000, true)], Scan(data, 1 << 20));
        data[999] = 1;
        Assert.Equal([(0, 1000, false)], Scan(data, 1 << 20));
    }

    [Fact]
    public void Matches_per_block_classification_for_any_buffer()
    {
        // Buffers built from zero and non-zero stretches of random lengths, scanned with random block sizes.
        var stretch = Gen.Select(Gen.Int[1, 3000], Gen.Bool);
        Gen.Select(stretch.Array[0, 12], Gen.Int[0, 3].Select(i => new[] { 512, 1000, 4096, 8192 }[i])).Sample((stretches, block) =>
        {
            var data = stretches.SelectMany(s => Enumerable.Repeat(s.Item2 ? (byte)0 : (byte)0x5a, s.Item1)).ToArray();
            var runs = Scan(data, block);
            Assert.Equal(Reference(data, block), runs);
        });
    }
}
