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
}
