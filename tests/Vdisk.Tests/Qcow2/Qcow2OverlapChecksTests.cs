using CsCheck;
using Vdisk.Drivers.Qcow2;
using Xunit;

namespace Vdisk.Tests.Qcow2;

/// <summary>Which metadata writes are checked against, from the overlap-check options (qcow2_update_options_prepare).</summary>
public class Qcow2OverlapChecksTests
{
    private static readonly Dictionary<string, bool> NoSwitches = [];

    [Theory]
    // QEMU's QCOW2_OL_* values: constant 0x12b, cached 0x17f, all 0x1ff.
    [InlineData(null, 0x17f)]
    [InlineData("cached", 0x17f)]
    [InlineData("none", 0)]
    [InlineData("constant", 0x12b)]
    [InlineData("all", 0x1ff)]
    public void Templates_select_QEMUs_bits(string? template, int expected) =>
        Assert.Equal((Qcow2OverlapChecks)expected, Qcow2OverlapCheckNames.Resolve(template, NoSwitches));

    [Fact]
    public void The_default_leaves_out_only_the_inactive_L2_tables() =>
        Assert.Equal(Qcow2OverlapChecks.All & ~Qcow2OverlapChecks.InactiveL2, Qcow2OverlapCheckNames.Resolve(null, NoSwitches));

    /// <summary>Each switch sets or clears exactly its own bit, whatever the template.</summary>
    [Fact]
    public void A_switch_overrides_its_bit_and_nothing_else()
    {
        string?[] names = [null, "none", "constant", "cached", "all"];
        var templates = Gen.Int[0, names.Length - 1].Select(i => names[i]);
        // Per switch: absent, off or on.
        int count = Qcow2OverlapCheckNames.Switches.Length;
        var switches = Gen.Int[0, 2].Array[count].Select(states => Enumerable.Range(0, count).Where(i => states[i] > 0)
            .ToDictionary(i => Qcow2OverlapCheckNames.Switches[i], i => states[i] == 2));
        Gen.Select(templates, switches).Sample((template, chosen) =>
        {
            var baseline = Qcow2OverlapCheckNames.Resolve(template, NoSwitches);
            var resolved = Qcow2OverlapCheckNames.Resolve(template, chosen);
            for (int bit = 0; bit < Qcow2OverlapCheckNames.Switches.Length; bit++)
            {
                var flag = (Qcow2OverlapChecks)(1 << bit);
                bool expected = chosen.TryGetValue(Qcow2OverlapCheckNames.Switches[bit], out bool on) ? on : (baseline & flag) != 0;
                Assert.Equal(expected, (resolved & flag) != 0);
            }
        });
    }

    [Fact]
    public void Names_are_QEMUs_in_the_corruption_message()
    {
        Assert.Equal("active L2 table", Qcow2OverlapCheckNames.Describe(Qcow2OverlapChecks.ActiveL2));
        Assert.Equal("inactive L2 table", Qcow2OverlapCheckNames.Describe(Qcow2OverlapChecks.InactiveL2));
        Assert.Equal("qcow2_header", Qcow2OverlapCheckNames.Describe(Qcow2OverlapChecks.MainHeader));
        Assert.Equal("refcount block", Qcow2OverlapCheckNames.Describe(Qcow2OverlapChecks.RefcountBlock));
    }

    /// <summary>QEMU's overlaps_with, one entry at a time: what the vectorised walk must agree with.</summary>
    private static bool AnyEntryOverlapsReference(ulong[] entries, ulong mask, long entryLength, long start, long length) =>
        entries.Any(e => (e & mask) != 0 && length > 0 && (long)(e & mask) < start + length && start < (long)(e & mask) + entryLength);

    [Fact]
    public void The_table_walk_finds_an_entry_that_touches_the_range_and_nothing_else()
    {
        const long cluster = 65536, start = 10 * cluster, length = 2 * cluster;
        // Padding to more than one vector's worth, with the entry in the scalar tail or not.
        foreach (int padding in new[] { 0, 3, 4, 7 })
        {
            bool Hit(ulong entry) => Qcow2OverlapScan.AnyEntryOverlaps([.. new ulong[padding], entry], L2Entry.OffsetMask, cluster, start, length);
            Assert.True(Hit((ulong)start));
            Assert.True(Hit((ulong)(start + length - cluster)));
            Assert.True(Hit((ulong)(start - cluster + 512)));  // an unaligned table whose end reaches in
            Assert.False(Hit((ulong)(start - cluster)));
            Assert.False(Hit((ulong)(start + length)));
            Assert.True(Hit((ulong)start | (1UL << 63)));      // flags are not part of the offset
            Assert.False(Hit(0));
        }
        // An unused entry is no table at offset 0, even when the range starts there.
        Assert.False(Qcow2OverlapScan.AnyEntryOverlaps(new ulong[9], L2Entry.OffsetMask, cluster, 0, cluster));
        Assert.False(Qcow2OverlapScan.AnyEntryOverlaps([(ulong)start], L2Entry.OffsetMask, cluster, start, 0));
    }

    [Fact]
    public void The_table_walk_agrees_with_one_entry_at_a_time()
    {
        const long cluster = 4096;
        // Offsets from a few clusters around the range, so that hits and misses are both common;
        // some not cluster-aligned (the mask keeps 512-byte steps).
        var entries = Gen.Select(Gen.Long[0, 24], Gen.Int[0, 15], Gen.Bool, (c, sector, flagged) =>
            ((ulong)(c * cluster) + (ulong)(sector < 8 ? 0 : (sector - 8) * 512)) | (flagged ? 1UL << 62 : 0)).Array[0, 40];
        Gen.Select(entries, Gen.Long[0, 20], Gen.Long[0, 6]).Sample((table, first, clusters) =>
        {
            long start = first * cluster, length = clusters * cluster;
            Assert.Equal(AnyEntryOverlapsReference(table, L2Entry.OffsetMask, cluster, start, length),
                Qcow2OverlapScan.AnyEntryOverlaps(table, L2Entry.OffsetMask, cluster, start, length));
        });
    }
}
