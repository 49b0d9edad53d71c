namespace Vdisk.Drivers.Qcow2;

/// <summary>
/// Which metadata a write is checked against before it lands (QEMU's QCOW2_OL_* bits, in their
/// order: the bit numbers are the order of the <c>overlap-check.*</c> switches).
/// </summary>
[Flags]
internal enum Qcow2OverlapChecks
{
    None = 0,
    MainHeader = 1 << 0,
    ActiveL1 = 1 << 1,
    ActiveL2 = 1 << 2,
    RefcountTable = 1 << 3,
    RefcountBlock = 1 << 4,
    SnapshotTable = 1 << 5,
    InactiveL1 = 1 << 6,
    InactiveL2 = 1 << 7,
    BitmapDirectory = 1 << 8,

    /// <summary>What needs no table walk.</summary>
    Constant = MainHeader | ActiveL1 | RefcountTable | SnapshotTable | BitmapDirectory,
    /// <summary>The default: everything that is in memory.</summary>
    Cached = Constant | ActiveL2 | RefcountBlock | InactiveL1,
    /// <summary>Also the snapshots' L2 tables, whose L1 tables are read from the image for each check.</summary>
    All = Cached | InactiveL2,
}

internal static class Qcow2OverlapCheckNames
{
    /// <summary>The <c>overlap-check.*</c> switches, bit by bit.</summary>
    public static readonly string[] Switches =
    [
        "main-header", "active-l1", "active-l2", "refcount-table", "refcount-block", "snapshot-table", "inactive-l1",
        "inactive-l2", "bitmap-directory",
    ];

    /// <summary>metadata_ol_names: how the corruption message names what a write would have hit.</summary>
    public static string Describe(Qcow2OverlapChecks hit) => hit switch
    {
        Qcow2OverlapChecks.MainHeader => "qcow2_header",
        Qcow2OverlapChecks.ActiveL1 => "active L1 table",
        Qcow2OverlapChecks.ActiveL2 => "active L2 table",
        Qcow2OverlapChecks.RefcountTable => "refcount table",
        Qcow2OverlapChecks.RefcountBlock => "refcount block",
        Qcow2OverlapChecks.SnapshotTable => "snapshot table",
        Qcow2OverlapChecks.InactiveL1 => "inactive L1 table",
        Qcow2OverlapChecks.InactiveL2 => "inactive L2 table",
        Qcow2OverlapChecks.BitmapDirectory => "bitmap directory",
        _ => hit.ToString(),
    };

    /// <summary>
    /// qcow2_update_options_prepare: the template (<c>overlap-check</c> or
    /// <c>overlap-check.template</c>, default cached), each bit then overridden by its switch.
    /// </summary>
    public static Qcow2OverlapChecks Resolve(string? template, Dictionary<string, bool>? switches)
    {
        var checks = template switch
        {
            "none" => Qcow2OverlapChecks.None,
            "constant" => Qcow2OverlapChecks.Constant,
            "all" => Qcow2OverlapChecks.All,
            _ => Qcow2OverlapChecks.Cached,
        };
        for (int bit = 0; bit < Switches.Length; bit++)
        {
            if (switches is null || !switches.TryGetValue(Switches[bit], out bool on)) continue;
            checks = on ? checks | (Qcow2OverlapChecks)(1 << bit) : checks & ~(Qcow2OverlapChecks)(1 << bit);
        }
        return checks;
    }
}
