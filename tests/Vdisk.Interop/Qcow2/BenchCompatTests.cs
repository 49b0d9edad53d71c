using System.Text.RegularExpressions;
using Xunit;

using Vdisk.Interop.Support;

namespace Vdisk.Interop.Qcow2;

/// <summary>
/// qemu-img bench side by side with qemu-img 7.2: its lines (the time masked), refusals, exit
/// codes, and what a write run leaves in the image.
/// </summary>
public partial class BenchCompatTests
{
    private static void Prepare(string dir) =>
        Qemu.Ok(SideBySide.RunIn(dir, "qemu-img", ["create", "-q", "-f", "qcow2", "b.qcow2", "1M"]));

    [GeneratedRegex(@"Run completed in [0-9]+\.[0-9]{3} seconds\.")]
    private static partial Regex Timing();

    [Theory]
    [InlineData("-c 1 b.qcow2")]
    [InlineData("-w -c 1 b.qcow2")]
    [InlineData("-c 0 b.qcow2")]
    [InlineData("-c 10 -d 2 -s 512 -S 1k -o 4k -w --pattern 0x5a b.qcow2")]
    [InlineData("-c 300 -d 3 -s 4k -o 1020k -w --pattern 7 b.qcow2")]
    [InlineData("-q -c 1 b.qcow2")]
    [InlineData("-c 010 -d 0x2 b.qcow2")]
    [InlineData("-w --flush-interval 64 -c 100 b.qcow2")]
    [InlineData("-w --flush-interval 4 -d 4 --no-drain -c 10 b.qcow2")]
    [InlineData("-c 1 -t none -n b.qcow2")]
    [InlineData("-c 1 -i io_uring b.qcow2")]
    [InlineData("-c 1 -t unsafe -w b.qcow2")]
    [InlineData("-c 1 -t writethrough -w b.qcow2")]
    [InlineData("-U -c 1 b.qcow2")]
    [InlineData("-U -w -c 1 b.qcow2")]
    [InlineData("-c 1 --image-opts driver=null-co")]
    [InlineData("-c 1 -f raw b.qcow2")]
    [InlineData("-c 3 -s 512 -o 1M b.qcow2")]
    [InlineData("-c 2 -s 768k b.qcow2")]
    [InlineData("-c x b.qcow2")]
    [InlineData("-c 3000000000 b.qcow2")]
    [InlineData("-d -1 b.qcow2")]
    [InlineData("-s abc b.qcow2")]
    [InlineData("-s 3G b.qcow2")]
    [InlineData("-S 3G b.qcow2")]
    [InlineData("-o -5 b.qcow2")]
    [InlineData("-t bogus b.qcow2")]
    [InlineData("-i bogus b.qcow2")]
    [InlineData("--pattern 256 b.qcow2")]
    [InlineData("--flush-interval 1 b.qcow2")]
    [InlineData("-w --flush-interval 1 b.qcow2")]
    [InlineData("-c 1 -n b.qcow2")]
    [InlineData("-c 1 -i native b.qcow2")]
    [InlineData("b.qcow2 x")]
    [InlineData("")]
    [InlineData("-c 1 nonexist.qcow2")]
    public void Bench_runs_as_qemu_img_bench(string args)
    {
        using var sides = new SideBySide(Prepare);
        var (theirs, mine) = sides.Run(["bench", .. args.Split(' ', StringSplitOptions.RemoveEmptyEntries)]);
        SideBySide.AssertSameOutput(theirs with { Stdout = Timing().Replace(theirs.Stdout, "TIME") },
            mine with { Stdout = Timing().Replace(mine.Stdout, "TIME") });
        sides.AssertSameImage("b.qcow2", compareHostOffsets: false);
    }
}
