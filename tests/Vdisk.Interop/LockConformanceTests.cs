using Vdisk.Interop.Support;
using Xunit;

namespace Vdisk.Interop;

/// <summary>
/// vdisk's twins of QEMU's tools take the same lock bytes as QEMU and, paired with QEMU
/// holders and vdisk holders in both orders, give the same outcome and error core.
/// </summary>
public class LockConformanceTests
{
    public static TheoryData<string> HolderNames => new(Mode.Holders.Where(m => m.Vdisk is not null).Select(m => m.Name));
    public static TheoryData<string> AllHolderNames => new(Mode.Holders.Select(m => m.Name));
    public static TheoryData<string> OneShotNames => new(Mode.OneShots.Select(m => m.Name));

    private static Mode Holder(string name) => Mode.Holders.Single(m => m.Name == name);
    private static Mode OneShot(string name) => Mode.OneShots.Single(m => m.Name == name);

    private static Support.Holder StartHolder((string Program, string[] Args) cmd, string image) =>
        Support.Holder.Start(image, cmd.Program, cmd.Args);

    [Theory]
    [MemberData(nameof(HolderNames))]
    public void Holder_TakesQemusBytes(string name)
    {
        using var dir = new TempDir();
        var img = dir.RawImage();
        var mode = Holder(name);
        SortedSet<int> qemuBytes, vdiskBytes;
        using (var q = StartHolder(mode.Qemu(img), img)) qemuBytes = LockBytesHeld.Read(q.Pid, img);
        using (var v = StartHolder(mode.Vdisk!(img), img)) vdiskBytes = LockBytesHeld.Read(v.Pid, img);
        Assert.Equal(LockBytesHeld.Describe(qemuBytes), LockBytesHeld.Describe(vdiskBytes));
    }

    [Theory]
    [MemberData(nameof(OneShotNames))]
    public void OneShot_MakesQemusLockCallsInQemusOrder(string name)
    {
        using var dir = new TempDir();
        var img = dir.RawImage();
        var mode = OneShot(name);
        var q = mode.Qemu(img);
        var v = mode.Vdisk!(img);
        var (qemuResult, qemuCalls) = LockTrace.Capture(q.Program, q.Args);
        var (vdiskResult, vdiskCalls) = LockTrace.Capture(v.Program, v.Args);
        Assert.Equal(0, qemuResult.ExitCode);
        Assert.Equal(0, vdiskResult.ExitCode);
        Assert.Equal(qemuCalls, vdiskCalls);
    }

    [Theory]
    [MemberData(nameof(AllHolderNames))]
    public void OpenersAgainstHolder_GetQemusOutcome(string holderName)
    {
        using var dir = new TempDir();
        var img = dir.RawImage();
        var holder = Holder(holderName);
        var holderImpls = new List<(string Who, (string, string[]) Cmd)> { ("qemu", holder.Qemu(img)) };
        if (holder.Vdisk is not null) holderImpls.Add(("vdisk", holder.Vdisk(img)));
        // Servers (qemu-nbd) never end by themselves: only the holders that sleep are tried as openers.
        var openers = Mode.OneShots.Concat(Mode.Holders.Where(h => h.Vdisk is not null && h.Qemu(img).Args.Contains("sleep 60000"))).ToArray();
        var mismatches = new List<string>();
        foreach (var (who, cmd) in holderImpls)
        {
            using var h = StartHolder(cmd, img);
            foreach (var opener in openers)
            {
                var (qp, qa) = opener.Qemu(img);
                var (vp, va) = opener.Vdisk!(img);
                // A holder-mode opener is tried as a one-shot: its sleep is replaced by a read.
                qa = qa.Select(a => a == "sleep 60000" ? "read 0 512" : a).ToArray();
                va = va.Select(a => a == "sleep 60000" ? "read 0 512" : a).ToArray();
                string qemu = Outcome.Of(Programs.Run(qp, qa));
                string vdisk = Outcome.Of(Programs.Run(vp, va));
                if (qemu != vdisk) mismatches.Add($"{who} holder '{holderName}', opener '{opener.Name}': qemu {qemu}, vdisk {vdisk}");
            }
        }
        Assert.Empty(mismatches);
    }

    [Fact]
    public void VirtioBlkHolder_RefusesWritersOfBothKinds()
    {
        using var dir = new TempDir();
        var img = dir.RawImage();
        using var h = StartHolder(Holder("virtio-blk").Qemu(img), img);
        var r = Programs.Run(Programs.Vdisk, "io", "-f", "raw", img, "-c", "write 0 4k");
        Assert.Equal(1, r.ExitCode);
        Assert.Equal($"vdisk: can't open device {img}: Failed to get \"write\" lock\nIs another process using the image [{img}]?\n", r.Stderr);
        Assert.Equal("", r.Stdout);
        Assert.Equal(Outcome.Of(Programs.Run("qemu-io", "-f", "raw", img, "-c", "write 0 4k")), Outcome.Of(r));
    }

    [Fact]
    public void GuestDeviceIsRefusedByVdiskWriter_AsByQemuWriter()
    {
        using var dir = new TempDir();
        var img = dir.RawImage();
        var device = Holder("virtio-blk").Qemu(img);
        string qemuOutcome, vdiskOutcome;
        using (StartHolder(Holder("io rw").Qemu(img), img)) qemuOutcome = Outcome.Of(Programs.Run(device.Program, device.Args));
        using (StartHolder(Holder("io rw").Vdisk!(img), img)) vdiskOutcome = Outcome.Of(Programs.Run(device.Program, device.Args));
        Assert.Equal("Failed to get shared \"write\" lock +hint", qemuOutcome);
        Assert.Equal(qemuOutcome, vdiskOutcome);
    }

    [Fact]
    public void QemuNbdHolder_AdmitsVdiskReadersLikeQemuReaders()
    {
        using var dir = new TempDir();
        var img = dir.RawImage();
        using var h = StartHolder(Holder("qemu-nbd").Qemu(img), img);
        // qemu-nbd 7.2 exports share everything but resize (byte 203).
        Assert.Equal("100,101,203", LockBytesHeld.Describe(LockBytesHeld.Read(h.Pid, img)));
        var r = Programs.Run(Programs.Vdisk, "io", "-r", "-f", "raw", img, "-c", "read -P 0 0 4k");
        Assert.Equal(0, r.ExitCode);
        Assert.StartsWith("read 4096/4096 bytes at offset 0\n", r.Stdout);
    }
}
