using Vdisk.Interop.Support;
using Xunit;

namespace Vdisk.Interop.Qcow2;

/// <summary>
/// Lazy refcounts as QEMU keeps them (iotest 039): while the dirty bit is set, refcount blocks do
/// not go to disk with the L2 tables, so a process killed after a write leaves an image whose
/// refcounts lag (repaired on the next read-write open); a clean close writes them and clears the
/// bit; the lazy-refcounts option of an open or a reopen turns the behaviour on or off.
/// </summary>
public class Qcow2LazyRefcountsTests
{
    public static TheoryData<string, string, string> Runs => new()
    {
        // create options, commands before the write, whether the process is killed after it
        { "compat=1.1,lazy_refcounts=on", "", "kill" },
        { "compat=1.1,lazy_refcounts=on", "", "close" },
        { "compat=1.1,lazy_refcounts=off", "reopen -o lazy-refcounts=on", "kill" },
        { "compat=1.1,lazy_refcounts=on", "reopen -o lazy-refcounts=off", "kill" },
        { "compat=1.1,lazy_refcounts=off", "reopen -o lazy-refcounts=on", "close" },
        { "compat=0.10", "reopen -o lazy-refcounts=on", "close" },
        { "compat=1.1,lazy_refcounts=on", "reopen -o lazy-refcounts=maybe", "close" },
    };

    [Theory]
    [MemberData(nameof(Runs))]
    public void A_write_leaves_the_refcounts_and_dirty_bit_qemu_io_leaves(string create, string before, string end)
    {
        using var dir = new TempDir();
        var seen = new List<string>();
        foreach (var (program, tool) in new[] { ("qemu-io", new[] { "qemu-io" }), ("vdisk", new[] { Programs.Vdisk, "io" }) })
        {
            string img = dir.File(program + ".qcow2");
            Qemu.Ok(Qemu.Img("create", "-q", "-f", "qcow2", "-o", create, img, "128M"));
            var args = new List<string>(tool.Skip(1)) { "-t", "writethrough" };
            if (before.Length > 0) args.AddRange(["-c", before]);
            args.AddRange(["-c", "write -P 0x5a 0 512"]);
            if (end == "kill") args.AddRange(["-c", "sigraise 9"]);
            args.Add(img);
            var r = Programs.Run(tool[0], [.. args]);
            byte incompatible = File.ReadAllBytes(img)[79];
            var check = Qemu.Img("check", img);
            string stdout = string.Join("\n", r.Stdout.Split('\n').Where(l => !l.Contains(" ops; ", StringComparison.Ordinal)));
            seen.Add($"exit {r.ExitCode}\n{stdout}\n{r.Stderr.Replace(program + ":", "PROGRAM:")}\ndirty bit: {incompatible & 1}\n" +
                $"check exit {check.ExitCode}\n{check.Stdout}{check.Stderr}");
        }
        Assert.Equal(seen[0], seen[1]);
    }
}
