using Vdisk.Interop.Support;
using Xunit;

namespace Vdisk.Interop.Qcow2;

/// <summary>
/// Lock conformance on qcow2 images and overlays, where locks really refuse things: vdisk's
/// twins of qemu-io, qemu-img and their one-shot commands take QEMU's bytes and make QEMU's
/// lock calls, and against QEMU and vdisk holders (and qemu-nbd and a paused VM) every opener
/// gets QEMU's outcome and error core, on the base and on the overlay.
/// </summary>
public class Qcow2LockConformanceTests
{
    /// <summary>A base image and an overlay on it, made by qemu-img.</summary>
    private sealed class Images : IDisposable
    {
        private readonly TempDir _dir = new();
        public string Base { get; }
        public string Overlay { get; }
        public string Dir => _dir.Path;

        public Images()
        {
            Base = _dir.File("base.qcow2");
            Overlay = _dir.File("overlay.qcow2");
            Check(Programs.Run("qemu-img", "create", "-q", "-f", "qcow2", Base, "4M"));
            Check(Programs.Run("qemu-io", "-f", "qcow2", Base, "-c", "write -P 0x11 0 64k"));
            Check(Programs.Run("qemu-img", "create", "-q", "-f", "qcow2", "-b", Base, "-F", "qcow2", Overlay));
            Check(Programs.Run("qemu-io", "-f", "qcow2", Overlay, "-c", "write -P 0x22 64k 64k"));
        }

        public string Pick(string which) => which == "base" ? Base : Overlay;

        private static void Check(RunResult r)
        {
            if (r.ExitCode != 0) throw new InvalidOperationException(r.ToString());
        }

        public void Dispose() => _dir.Dispose();
    }

    private static (string, string[]) QemuIo(params string[] a) => ("qemu-io", a);
    private static (string, string[]) VdiskIo(params string[] a) => (Programs.Vdisk, ["io", .. a]);
    private static (string, string[]) QemuImg(params string[] a) => ("qemu-img", a);
    private static (string, string[]) VdiskImg(params string[] a) => (Programs.Vdisk, a);
    private static string Opts(string img, string extra) => $"driver=qcow2,file.driver=file,file.filename={img}{extra}";

    private static readonly Mode[] Holders =
    [
        new("io rw", img => QemuIo("-f", "qcow2", img, "-c", "sleep 60000"), img => VdiskIo("-f", "qcow2", img, "-c", "sleep 60000")),
        new("io -r", img => QemuIo("-r", "-f", "qcow2", img, "-c", "sleep 60000"), img => VdiskIo("-r", "-f", "qcow2", img, "-c", "sleep 60000")),
        new("io -r -U", img => QemuIo("-r", "-U", "-f", "qcow2", img, "-c", "sleep 60000"), img => VdiskIo("-r", "-U", "-f", "qcow2", img, "-c", "sleep 60000")),
        new("io locking=off", img => QemuIo("--image-opts", Opts(img, ",file.locking=off"), "-c", "sleep 60000"),
            img => VdiskIo("--image-opts", Opts(img, ",file.locking=off"), "-c", "sleep 60000")),
        new("qemu-nbd", img => ("qemu-nbd", ["-f", "qcow2", "--socket", img + ".sock", img]), null),
        new("qemu-nbd -r", img => ("qemu-nbd", ["-r", "-f", "qcow2", "--socket", img + ".sock", img]), null),
        new("virtio-blk", img => ("qemu-system-x86_64", ["-S", "-nodefaults", "-display", "none", "-machine", "pc",
            "-drive", $"if=none,id=d0,file={img},format=qcow2", "-device", "virtio-blk-pci,drive=d0"]), null),
    ];

    /// <summary>One-shot openers, the destructive ones last.</summary>
    private static Mode[] Openers(string dir) =>
    [
        new("io rw read", img => QemuIo("-f", "qcow2", img, "-c", "read 0 4k"), img => VdiskIo("-f", "qcow2", img, "-c", "read 0 4k")),
        new("io -r read", img => QemuIo("-r", "-f", "qcow2", img, "-c", "read 0 4k"), img => VdiskIo("-r", "-f", "qcow2", img, "-c", "read 0 4k")),
        new("io -r -U read", img => QemuIo("-r", "-U", "-f", "qcow2", img, "-c", "read 0 4k"), img => VdiskIo("-r", "-U", "-f", "qcow2", img, "-c", "read 0 4k")),
        new("io locking=off read", img => QemuIo("--image-opts", Opts(img, ",file.locking=off"), "-c", "read 0 4k"),
            img => VdiskIo("--image-opts", Opts(img, ",file.locking=off"), "-c", "read 0 4k")),
        new("info", img => QemuImg("info", img), img => VdiskImg("info", img)),
        new("info -U", img => QemuImg("info", "-U", img), img => VdiskImg("info", "-U", img)),
        new("check", img => QemuImg("check", img), img => VdiskImg("check", img)),
        new("check -U", img => QemuImg("check", "-U", img), img => VdiskImg("check", "-U", img)),
        new("map", img => QemuImg("map", "--output=json", img), img => VdiskImg("map", "--output=json", img)),
        new("compare", img => QemuImg("compare", img, img), img => VdiskImg("compare", img, img)),
        new("convert", img => QemuImg("convert", "-O", "raw", img, Path.Combine(dir, "q.raw")), img => VdiskImg("convert", "-O", "raw", img, Path.Combine(dir, "v.raw"))),
        new("convert -U", img => QemuImg("convert", "-U", "-O", "raw", img, Path.Combine(dir, "q.raw")), img => VdiskImg("convert", "-U", "-O", "raw", img, Path.Combine(dir, "v.raw"))),
        new("create -b", img => QemuImg("create", "-q", "-f", "qcow2", "-b", img, "-F", "qcow2", Path.Combine(dir, "q-top.qcow2")),
            img => VdiskImg("create", "-q", "-f", "qcow2", "-b", img, "-F", "qcow2", Path.Combine(dir, "v-top.qcow2"))),
        new("create new", _ => QemuImg("create", "-q", "-f", "qcow2", Path.Combine(dir, "q-new.qcow2"), "1M"),
            _ => VdiskImg("create", "-q", "-f", "qcow2", Path.Combine(dir, "v-new.qcow2"), "1M")),
        new("io write", img => QemuIo("-f", "qcow2", img, "-c", "write 1M 4k"), img => VdiskIo("-f", "qcow2", img, "-c", "write 1M 4k")),
        new("resize", img => QemuImg("resize", "-q", img, "+1M"), img => VdiskImg("resize", "-q", img, "+1M")),
        new("commit", img => QemuImg("commit", "-q", "-d", img), img => VdiskImg("commit", "-q", "-d", img)),
    ];

    public static TheoryData<string, string> HolderCases()
    {
        var data = new TheoryData<string, string>();
        foreach (var h in Holders)
            foreach (var which in new[] { "base", "overlay" })
                data.Add(h.Name, which);
        return data;
    }

    public static TheoryData<string, string> TwinHolderCases()
    {
        var data = new TheoryData<string, string>();
        foreach (var h in Holders.Where(h => h.Vdisk is not null))
            foreach (var which in new[] { "base", "overlay" })
                data.Add(h.Name, which);
        return data;
    }

    /// <summary>Reduces failures that are not lock conflicts to their text without the program name.</summary>
    private static string Normalized(RunResult r) =>
        Outcome.Of(r).Replace("qemu-img: ", "").Replace("qemu-io: ", "").Replace("vdisk: ", "");

    [Theory]
    [MemberData(nameof(TwinHolderCases))]
    public void Holder_TakesQemusBytesOnImageAndBacking(string holderName, string which)
    {
        using var images = new Images();
        var img = images.Pick(which);
        var mode = Holders.Single(h => h.Name == holderName);
        string Bytes(Support.Holder h) =>
            $"image {LockBytesHeld.Describe(LockBytesHeld.Read(h.Pid, img))}; base {LockBytesHeld.Describe(LockBytesHeld.Read(h.Pid, images.Base))}";
        string qemu, vdisk;
        using (var q = Support.Holder.Start(img, mode.Qemu(img).Program, mode.Qemu(img).Args)) qemu = Bytes(q);
        using (var v = Support.Holder.Start(img, mode.Vdisk!(img).Program, mode.Vdisk!(img).Args)) vdisk = Bytes(v);
        Assert.Equal(qemu, vdisk);
    }

    [Theory]
    [MemberData(nameof(HolderCases))]
    public void Openers_GetQemusOutcomeAgainstEveryHolder(string holderName, string which)
    {
        var holder = Holders.Single(h => h.Name == holderName);
        // A commit of the base has nothing to commit into.
        OpenerConformance.AssertNone(OpenerConformance.Mismatches(holder, () => new Images(), i => i.Pick(which), i => i.Pick(which),
            i => Openers(i.Dir).Where(o => !(o.Name == "commit" && which == "base")), Normalized, which));
    }

    [Theory]
    [InlineData("io rw read", "base")]
    [InlineData("io rw read", "overlay")]
    [InlineData("io -r read", "overlay")]
    [InlineData("io -r -U read", "overlay")]
    [InlineData("io write", "overlay")]
    [InlineData("info", "base")]
    [InlineData("info", "overlay")]
    [InlineData("info -U", "overlay")]
    [InlineData("check", "overlay")]
    [InlineData("check -U", "overlay")]
    [InlineData("map", "overlay")]
    [InlineData("compare", "overlay")]
    [InlineData("convert", "overlay")]
    [InlineData("convert -U", "overlay")]
    [InlineData("create -b", "overlay")]
    [InlineData("create new", "base")]
    [InlineData("resize", "base")]
    [InlineData("commit", "overlay")]
    public void OneShot_MakesQemusLockCalls(string openerName, string which)
    {
        using var images = new Images();
        var img = images.Pick(which);
        var opener = Openers(images.Dir).Single(o => o.Name == openerName);
        var (qp, qa) = opener.Qemu(img);
        var (vp, va) = opener.Vdisk!(img);
        var (qr, qemuCalls) = LockTrace.Capture(qp, qa);
        var (vr, vdiskCalls) = LockTrace.Capture(vp, va);
        Assert.Equal(0, qr.ExitCode);
        Assert.Equal(0, vr.ExitCode);
        Assert.Equal(qemuCalls, vdiskCalls);
    }

    [Theory]
    [InlineData("io rw")]
    [InlineData("io -r")]
    [InlineData("io -r -U")]
    [InlineData("qemu-nbd -r")]
    [InlineData("virtio-blk")]
    public void CommitWhileTheBaseIsHeld_FailsOrSucceedsWithQemusWords(string holderName)
    {
        using var images = new Images();
        var holder = Holders.Single(h => h.Name == holderName).Qemu(images.Base);
        using var h = Support.Holder.Start(images.Base, holder.Program, holder.Args);
        var q = Programs.Run("qemu-img", "commit", "-q", "-d", images.Overlay);
        var v = Programs.Run(Programs.Vdisk, "commit", "-q", "-d", images.Overlay);
        Assert.Equal(q.ExitCode, v.ExitCode);
        Assert.Equal(q.Stderr.Replace("qemu-img: ", "vdisk: "), v.Stderr);
    }

    [Fact]
    public void SixteenMixedWriters_NeverTwoAdmitted()
    {
        using var images = new Images();
        string img = images.Overlay;
        string fifo = Path.Combine(images.Dir, "go");
        Assert.Equal(0, Programs.Run("mkfifo", fifo).ExitCode);
        int roundsWithOne = 0;
        for (int round = 0; round < 100; round++)
        {
            // Every racer blocks reading the FIFO; one write of 16 lines releases them together.
            // A racer that is admitted prints the image's length (line-buffered by stdbuf, as qemu-io
            // otherwise holds its output back until exit) and then keeps the image until it is
            // killed, after every other racer has been refused, so no two can take turns.
            // Holding the FIFO open read-write here lets the racers' opens complete at once (a FIFO
            // open for reading otherwise waits for a writer), so their descriptors show when they are ready.
            using var start = new FileStream(fifo, FileMode.Open, FileAccess.ReadWrite);
            var racers = Enumerable.Range(0, 16).Select(i =>
            {
                string[] tool = i % 2 == 0 ? ["qemu-io"] : [Programs.Vdisk, "io"];
                return ChildProcess.Start("sh", ["-c", "read x < \"$0\"; exec stdbuf -oL \"$@\"", fifo, .. tool, "-f", "qcow2", img, "-c", "length", "-c", "sleep 600000"]);
            }).ToArray();
            try
            {
                WaitUntilAllOpened(racers, fifo);
                start.Write(System.Text.Encoding.ASCII.GetBytes(string.Concat(Enumerable.Repeat("go\n", 16))));
                start.Flush();
                var admittedRacers = racers.Where(r => r.WaitForOrExit((stdout, _) => stdout.Length > 0, "was admitted or refused")).ToList();
                int admitted = admittedRacers.Count;
                Assert.True(admitted <= 1, $"round {round}: {admitted} writers admitted");
                foreach (var refused in racers.Except(admittedRacers).Select(r => r.Result()))
                    Assert.True(refused.ExitCode == 1 && System.Text.RegularExpressions.Regex.IsMatch(refused.Stderr, "Failed to get (shared )?\"write\" lock|Failed to lock byte"), refused.ToString());
                if (admitted == 1) roundsWithOne++;
            }
            finally
            {
                foreach (var r in racers) r.Dispose();
            }
        }
        Assert.True(roundsWithOne > 0);
    }

    private static void WaitUntilAllOpened(ChildProcess[] racers, string fifo)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (racers.FirstOrDefault(r => Support.Holder.ImageDescriptors(r.Pid, fifo).Count == 0) is { } late)
        {
            if (late.HasExited) throw new InvalidOperationException("a racer died before the start line: " + late.Stderr);
            if (DateTime.UtcNow > deadline) throw new TimeoutException("racers did not reach the start line");
            late.WaitForExit(TimeSpan.FromMilliseconds(5)); // a pause that ends early if it dies
        }
    }
}
