namespace Vdisk.Interop.Support;

/// <summary>
/// The holder-against-openers comparison every format's lock conformance tests make: QEMU's
/// holder and (when the mode has one) vdisk's each keep a fresh image open, and every opener is
/// run once by QEMU's tool and once by vdisk; each opener whose outcome differs is described.
/// </summary>
internal static class OpenerConformance
{
    /// <summary>
    /// The openers of <paramref name="openers"/> whose outcome differs between QEMU and vdisk,
    /// against both implementations of <paramref name="holder"/>. <paramref name="makeImage"/>
    /// makes a fresh image for each; the holder opens <paramref name="imageOf"/> and counts as
    /// started once <paramref name="lockedFileOf"/> (the file it locks last) has settled.
    /// Output file names of QEMU's and vdisk's runs (q.raw and v.raw, q-top and v-top) compare as equal.
    /// </summary>
    public static List<string> Mismatches<TImage>(Mode holder, Func<TImage> makeImage, Func<TImage, string> imageOf, Func<TImage, string> lockedFileOf,
        Func<TImage, IEnumerable<Mode>> openers, Func<RunResult, string> outcome, string what)
        where TImage : IDisposable
    {
        var mismatches = new List<string>();
        var implementations = new List<(string Who, Func<string, (string Program, string[] Args)> Start)> { ("qemu", holder.Qemu) };
        if (holder.Vdisk is not null) implementations.Add(("vdisk", holder.Vdisk));
        foreach (var (who, start) in implementations)
        {
            using var image = makeImage();
            string img = imageOf(image);
            var (program, args) = start(img);
            using var h = Holder.Start(lockedFileOf(image), program, args);
            foreach (var opener in openers(image))
            {
                var (qp, qa) = opener.Qemu(img);
                var (vp, va) = opener.Vdisk!(img);
                string qemu = outcome(Programs.Run(qp, qa)).Replace("q.raw", "OUT").Replace("q-top", "TOP");
                string vdisk = outcome(Programs.Run(vp, va)).Replace("v.raw", "OUT").Replace("v-top", "TOP");
                if (qemu != vdisk) mismatches.Add($"{who} holder '{holder.Name}' on {what}, opener '{opener.Name}': qemu {qemu} / vdisk {vdisk}");
            }
        }
        return mismatches;
    }

    /// <summary>Asserts that <see cref="Mismatches"/> found none, listing every one in full when it did.</summary>
    public static void AssertNone(List<string> mismatches) =>
        Xunit.Assert.True(mismatches.Count == 0, $"{mismatches.Count} openers differ:\n" + string.Join("\n", mismatches));
}
