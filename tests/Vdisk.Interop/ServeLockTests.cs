using Vdisk.Interop.Support;
using Xunit;

namespace Vdisk.Interop;

/// <summary>
/// The locks vdisk serve takes. On raw images an export is a virtual disk: it takes the bytes
/// of a paused VM's virtio-blk device with the same read-only and share-rw settings, and every
/// other program gets the same outcome against it as against that VM. On qcow2 and overlays
/// it takes exactly what qemu-storage-daemon takes for the same arguments.
/// </summary>
public class ServeLockTests
{
    /// <summary>A paused VM using the image through virtio-blk (the raw twin of an export); up once its QMP answers.</summary>
    private static Starter VirtioBlk(string image, string qmp, bool readOnly, bool shareRw) => new("qemu-system-x86_64",
    [
        "-S", "-nodefaults", "-display", "none", "-machine", "pc",
        "-drive", $"if=none,id=d0,file={Serve.Escape(image)},format=raw{(readOnly ? ",readonly=on" : "")}",
        "-device", $"virtio-blk-pci,drive=d0{(shareRw ? ",share-rw=on" : "")}",
        "-qmp", $"unix:{qmp},server=on,wait=off",
    ], qmp, true);

    /// <summary>vdisk serve exporting the image; the monitor comes last, so its answer means every option was applied.</summary>
    private static Starter VdiskExport(string image, TempDir dir, bool readOnly, bool shareRw) => new(Programs.Vdisk,
    [
        "serve", .. Serve.Blockdevs(image, "raw", readOnly: readOnly), .. Serve.NbdServer(dir.File("v.sock")),
        .. Serve.Export(writable: !readOnly, extra: shareRw ? ",share-rw=on" : ""), .. Serve.Monitor(dir.File("vm.sock")),
    ], dir.File("vm.sock"), true);

    private sealed record Starter(string Program, string[] Args, string ReadySocket, bool Qmp);

    private static Launch Hold(Starter s)
    {
        var (outcome, running) = Launch.Start(s.Program, s.Args, s.ReadySocket, s.Qmp);
        return running ?? throw new InvalidOperationException($"{s.Program} did not come up: {outcome}");
    }

    private static string HolderOutcome(Starter s)
    {
        var (outcome, running) = Launch.Start(s.Program, s.Args, s.ReadySocket, s.Qmp);
        running?.Dispose();
        return outcome;
    }

    public static TheoryData<bool, bool> DeviceModes => new() { { false, false }, { false, true }, { true, false }, { true, true } };

    [Theory]
    [MemberData(nameof(DeviceModes))]
    public void RawExport_TakesTheBytesOfAVirtioBlkDevice(bool readOnly, bool shareRw)
    {
        using var dir = new TempDir();
        var image = dir.RawImage();
        string device, export;
        using (var vm = Hold(VirtioBlk(image, dir.File("q.sock"), readOnly, shareRw))) device = LockBytesHeld.Describe(LockBytesHeld.Read(vm.Pid, image));
        using (var serve = Hold(VdiskExport(image, dir, readOnly, shareRw))) export = LockBytesHeld.Describe(LockBytesHeld.Read(serve.Pid, image));
        Assert.Equal(device, export);
        string expected = (readOnly, shareRw) switch
        {
            (false, false) => "100,101,201",
            (false, true) => "100,101",
            (true, false) => "100,201",
            _ => "100",
        };
        Assert.Equal(expected, export);
    }

    /// <summary>Programs that open the image while it is held, as one-shots or as holders that must come up.</summary>
    private static IEnumerable<(string Name, Func<string, string> Outcome)> Partners(TempDir dir) =>
        Mode.OneShots.Select(m => (m.Name, (Func<string, string>)(image =>
        {
            var (program, args) = m.Qemu(image);
            return Outcome.Of(Programs.Run(program, args));
        }))).Concat(
        [
            ("qemu-nbd", image => HolderOutcome(new("qemu-nbd", ["-f", "raw", "--socket", dir.File("n.sock"), image], dir.File("n.sock"), false))),
            ("qemu-nbd -r", image => HolderOutcome(new("qemu-nbd", ["-r", "-f", "raw", "--socket", dir.File("n.sock"), image], dir.File("n.sock"), false))),
            ("virtio-blk", image => HolderOutcome(VirtioBlk(image, dir.File("q2.sock"), false, false))),
            ("virtio-blk share-rw", image => HolderOutcome(VirtioBlk(image, dir.File("q2.sock"), false, true))),
            ("virtio-blk readonly", image => HolderOutcome(VirtioBlk(image, dir.File("q2.sock"), true, false))),
            ("qemu-img convert source", image => Outcome.Of(Programs.Run("qemu-img", "convert", "-f", "raw", "-O", "raw", image, dir.File("converted.raw")))),
        ]);

    [Theory]
    [MemberData(nameof(DeviceModes))]
    public void PartnersAgainstARawExport_GetTheOutcomeTheyGetAgainstTheVm(bool readOnly, bool shareRw)
    {
        using var dir = new TempDir();
        var image = dir.RawImage();
        var mismatches = new List<string>();
        var partners = Partners(dir).ToList();
        var againstVm = new Dictionary<string, string>();
        using (Hold(VirtioBlk(image, dir.File("q.sock"), readOnly, shareRw)))
            foreach (var (name, outcome) in partners) againstVm[name] = outcome(image);
        using (Hold(VdiskExport(image, dir, readOnly, shareRw)))
        {
            foreach (var (name, outcome) in partners)
            {
                string vdisk = outcome(image);
                if (vdisk != againstVm[name]) mismatches.Add($"{name}: against the VM {againstVm[name]}, against vdisk serve {vdisk}");
            }
        }
        Assert.Empty(mismatches);
        // The profile matters: without share-rw a writer is refused, with it a writer gets in.
        Assert.Equal(shareRw ? "ok" : "Failed to get \"write\" lock +hint", againstVm["io write"]);
    }

    [Theory]
    [MemberData(nameof(DeviceModes))]
    public void RawExportStartingAfterAHolder_FailsOrSucceedsLikeTheVm(bool readOnly, bool shareRw)
    {
        using var dir = new TempDir();
        var image = dir.RawImage();
        var mismatches = new List<string>();
        foreach (var holder in Mode.Holders.Where(m => m.Name is not ("virtio-blk" or "virtio-blk share-rw")))
        {
            var (program, args) = holder.Qemu(image);
            using var h = Holder.Start(image, program, args);
            // The VM adds QEMU's hint line to the error; vdisk serve prints the error the way
            // qemu-storage-daemon does for its options, without it (checked below).
            string vm = HolderOutcome(VirtioBlk(image, dir.File("q.sock"), readOnly, shareRw)).Replace(" +hint", "", StringComparison.Ordinal);
            string vdisk = HolderOutcome(VdiskExport(image, dir, readOnly, shareRw));
            if (vm != vdisk) mismatches.Add($"after {holder.Name}: VM {vm}, vdisk serve {vdisk}");
        }
        Assert.Empty(mismatches);
    }

    [Fact]
    public void RawExportRefusedByALock_ExitsWithQsdsMessageForm()
    {
        using var dir = new TempDir();
        var image = dir.RawImage();
        using var writer = Holder.Start(image, "qemu-io", "-f", "raw", image, "-c", "sleep 60000");
        var socket = dir.File("v.sock");
        var r = Programs.Run(Programs.Vdisk, ["serve", .. Serve.Blockdevs(image, "raw"), .. Serve.NbdServer(socket), .. Serve.Export(writable: true)], null);
        Assert.Equal(1, r.ExitCode);
        Assert.Equal("vdisk: --export type=nbd,id=e0,node-name=disk,name=disk,writable=on: Failed to get shared \"write\" lock\n", r.Stderr);
        Assert.False(File.Exists(socket));
    }

    [Fact]
    public void NodesWithoutExports_HoldNothing_LikeQsd()
    {
        using var dir = new TempDir();
        var image = dir.RawImage();
        string[] args = [.. Serve.Blockdevs(image, "raw"), .. Serve.Monitor(dir.File("m.sock"))];
        using var q = Daemon.Qsd(args, dir.File("m.sock"));
        Assert.Empty(LockBytesHeld.Read(q.Pid, image));
        Assert.NotEmpty(Holder.ImageDescriptors(q.Pid, image));
        q.Dispose();
        using var v = Daemon.Vdisk(args, dir.File("m.sock"));
        Assert.Empty(LockBytesHeld.Read(v.Pid, image));
        Assert.NotEmpty(Holder.ImageDescriptors(v.Pid, image));
    }

    [Fact]
    public void DeletingTheExportAndTheNode_ReleasesLocksAndDescriptor()
    {
        using var dir = new TempDir();
        var image = dir.RawImage();
        string qmp = dir.File("m.sock"), nbd = dir.File("v.sock");
        using var v = Daemon.Vdisk([.. Serve.Blockdevs(image, "raw"), .. Serve.NbdServer(nbd), .. Serve.Export(writable: true), .. Serve.Monitor(qmp)], qmp, nbd);
        using var c = QmpClient.Connect(qmp);
        Assert.Equal("100,101,201", LockBytesHeld.Describe(LockBytesHeld.Read(v.Pid, image)));
        Assert.Equal("{\"return\": {}}", c.Execute("{\"execute\":\"block-export-del\",\"arguments\":{\"id\":\"e0\"}}"));
        Assert.Empty(LockBytesHeld.Read(v.Pid, image));
        Assert.Equal("{\"return\": {}}", c.Execute("{\"execute\":\"blockdev-del\",\"arguments\":{\"node-name\":\"disk\"}}"));
        Assert.Equal("{\"return\": {}}", c.Execute("{\"execute\":\"blockdev-del\",\"arguments\":{\"node-name\":\"disk-file\"}}"));
        Assert.Empty(Holder.ImageDescriptors(v.Pid, image));
    }

    // ---- qcow2 and overlays: the same bytes as qemu-storage-daemon

    public static TheoryData<string, bool, bool> Qcow2Setups => new()
    {
        { "qcow2", false, true }, { "qcow2", true, false }, { "qcow2", false, false }, { "qcow2 node only", false, false },
        { "overlay", false, true }, { "overlay", true, false }, { "overlay node only", false, false },
    };

    [Theory]
    [MemberData(nameof(Qcow2Setups))]
    public void Qcow2AndOverlays_TakeQsdsBytes(string setup, bool readOnly, bool writable)
    {
        using var dir = new TempDir();
        var baseImage = Serve.PatternedQcow2(dir, "base.qcow2");
        var image = setup.StartsWith("overlay", StringComparison.Ordinal) ? Serve.Overlay(dir, baseImage) : baseImage;
        string qmp = dir.File("m.sock"), nbd = dir.File("n.sock");
        string[] args =
        [
            .. Serve.Blockdevs(image, "qcow2", readOnly: readOnly), .. Serve.NbdServer(nbd),
            .. setup.EndsWith("node only", StringComparison.Ordinal) ? [] : Serve.Export(writable: writable), .. Serve.Monitor(qmp),
        ];
        string Bytes(Daemon d) => $"top {LockBytesHeld.Describe(LockBytesHeld.Read(d.Pid, image))}; base {LockBytesHeld.Describe(LockBytesHeld.Read(d.Pid, baseImage))}";
        string qsd, vdisk;
        using (var q = Daemon.Qsd(args, qmp, nbd)) qsd = Bytes(q);
        using (var v = Daemon.Vdisk(args, qmp, nbd)) vdisk = Bytes(v);
        Assert.Equal(qsd, vdisk);
    }

    [Fact]
    public void PartnersAgainstAQcow2Export_GetQsdsOutcome()
    {
        using var dir = new TempDir();
        var image = Serve.PatternedQcow2(dir);
        string nbd = dir.File("n.sock");
        string[] args = [.. Serve.Blockdevs(image, "qcow2"), .. Serve.NbdServer(nbd), .. Serve.Export(writable: true), .. Serve.Monitor(dir.File("m.sock"))];
        (string, string[])[] partners =
        [
            ("qemu-io", ["-f", "qcow2", image, "-c", "write 0 4k"]),
            ("qemu-io", ["-r", "-f", "qcow2", image, "-c", "read 0 4k"]),
            ("qemu-io", ["-r", "-U", "-f", "qcow2", image, "-c", "read 0 4k"]),
            ("qemu-img", ["info", image]),
            ("qemu-img", ["info", "-U", image]),
            ("qemu-img", ["check", image]),
        ];
        List<string> Outcomes() => partners.Select(p => Outcome.Of(Programs.Run(p.Item1, p.Item2))).ToList();
        List<string> qsd, vdisk;
        using (Daemon.Qsd(args, dir.File("m.sock"))) qsd = Outcomes();
        using (Daemon.Vdisk(args, dir.File("m.sock"))) vdisk = Outcomes();
        Assert.Equal(qsd, vdisk);
    }
}
