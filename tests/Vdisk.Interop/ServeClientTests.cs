using Vdisk.Interop.Support;
using Xunit;

namespace Vdisk.Interop;

/// <summary>
/// Real NBD clients (nbdinfo, nbdcopy, qemu-img, qemu-io) against vdisk serve, read-only and
/// writable. Where the output depends only on the server, it must equal the output for
/// qemu-storage-daemon serving the same image with the same arguments.
/// </summary>
public class ServeClientTests
{
    private static string Normalize(string output, string socket) => output.Replace(socket, "SOCKET");

    private static (string Vdisk, string Qsd) BothDaemons(string image, string format, bool writable, Func<string, string> client, string exportOptions = "")
    {
        using var dir = new TempDir();
        string vsock = dir.File("v.sock"), qsock = dir.File("q.sock");
        string vdisk, qsd;
        using (var d = Daemon.Vdisk([.. Serve.Blockdevs(image, format), .. Serve.NbdServer(vsock), .. Serve.Export(writable: writable, extra: ",description=test export" + exportOptions), .. Serve.Monitor(dir.File("vm.sock"))], dir.File("vm.sock")))
            vdisk = Normalize(d.WhileRunning(() => client(vsock)), vsock);
        using (var d = Daemon.Qsd([.. Serve.Blockdevs(image, format), .. Serve.NbdServer(qsock), .. Serve.Export(writable: writable, extra: ",description=test export" + exportOptions), .. Serve.Monitor(dir.File("qm.sock"))], dir.File("qm.sock")))
            qsd = Normalize(d.WhileRunning(() => client(qsock)), qsock);
        return (vdisk, qsd);
    }

    private static string Run(string program, params string[] args)
    {
        var r = Programs.Run(program, args);
        Assert.True(r.ExitCode == 0, r.ToString());
        return r.Stdout;
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Nbdinfo_PlainJsonMapAndList_MatchQsd(bool writable)
    {
        using var dir = new TempDir();
        var image = Serve.PatternedRaw(dir);
        var (vdisk, qsd) = BothDaemons(image, "raw", writable, socket =>
            Run("nbdinfo", Serve.Uri(socket)) + Run("nbdinfo", "--json", Serve.Uri(socket)) +
            Run("nbdinfo", "--map", Serve.Uri(socket)) + Run("nbdinfo", "--list", Serve.Uri(socket, "")));
        Assert.Equal(qsd, vdisk);
        Assert.Contains($"is_read_only: {(writable ? "false" : "true")}", vdisk);
        Assert.Contains("         0       65536    0  data\n     65536      983040    3  hole,zero\n", vdisk);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Nbdinfo_OnQcow2_MatchesQsd(bool writable)
    {
        using var dir = new TempDir();
        var image = Serve.PatternedQcow2(dir);
        var (vdisk, qsd) = BothDaemons(image, "qcow2", writable, socket =>
            Run("nbdinfo", "--json", Serve.Uri(socket)) + Run("nbdinfo", "--map", Serve.Uri(socket)));
        Assert.Equal(qsd, vdisk);
    }

    /// <summary>A qcow2 overlay over a patterned qcow2, with data and zeroes of its own.</summary>
    private static string WrittenOverlay(TempDir dir)
    {
        var baseImage = Serve.PatternedQcow2(dir, "base.qcow2");
        var overlay = Serve.Overlay(dir, baseImage);
        Serve.Check(Programs.Run("qemu-io", "-f", "qcow2", overlay, "-c", "write -P 0x77 2M 64k", "-c", "write -z 1M 4k"));
        return overlay;
    }

    [Fact]
    public void NbdinfoAndNbdcopy_OnAnOverlay_SeeTheWholeChain_LikeQsd()
    {
        using var dir = new TempDir();
        var overlay = WrittenOverlay(dir);
        var (vdisk, qsd) = BothDaemons(overlay, "qcow2", writable: false, socket =>
            Run("nbdinfo", "--json", Serve.Uri(socket)) + Run("nbdinfo", "--map", Serve.Uri(socket)));
        Assert.Equal(qsd, vdisk);
        var copy = dir.File("copy.raw");
        var socket = dir.File("v.sock");
        using var d = Daemon.Vdisk([.. Serve.Blockdevs(overlay, "qcow2"), .. Serve.NbdServer(socket), .. Serve.Export(), .. Serve.Monitor(dir.File("m.sock"))], dir.File("m.sock"));
        Run("nbdcopy", Serve.Uri(socket), copy);
        Assert.Equal("Images are identical.\n", Run("qemu-img", "compare", "-U", "-f", "qcow2", "-F", "raw", overlay, copy));
    }

    /// <summary>
    /// A copy-on-read filter over an overlay: the export sees the whole chain through the filter,
    /// which is no layer of its own (QEMU's filters are skipped in chain walks), as under qsd.
    /// </summary>
    [Fact]
    public void A_copy_on_read_filter_over_an_overlay_is_mapped_like_qsd()
    {
        using var dir = new TempDir();
        var overlay = WrittenOverlay(dir);
        string Map(bool vdisk)
        {
            string socket = dir.File(vdisk ? "v.sock" : "q.sock"), qmp = dir.File(vdisk ? "vm.sock" : "qm.sock");
            string[] args =
            [
                .. Serve.Blockdevs(overlay, "qcow2", node: "overlay"), "--blockdev", "driver=copy-on-read,node-name=disk,file=overlay",
                .. Serve.NbdServer(socket), .. Serve.Export(writable: true, extra: ",allocation-depth=on"), .. Serve.Monitor(qmp),
            ];
            using var daemon = vdisk ? Daemon.Vdisk(args, qmp) : Daemon.Qsd(args, qmp);
            // Nothing here reads data, so the filter copies nothing up between the two runs.
            return Normalize(Run("nbdinfo", "--map", Serve.Uri(socket)) + Run("nbdinfo", "--map=qemu:allocation-depth", Serve.Uri(socket)) +
                Run("qemu-img", "map", "--output=json", "-f", "raw", Serve.Uri(socket)), socket);
        }
        string qsd = Map(vdisk: false), vdiskMap = Map(vdisk: true);
        Assert.Equal(qsd, vdiskMap);
        Assert.Contains("         0       65536    0  data\n", vdiskMap);
    }

    /// <summary>allocation-depth=on offers qemu:allocation-depth: the chain layer of each extent, listed and mapped as by qsd.</summary>
    [Fact]
    public void AllocationDepth_IsListedAndMapped_LikeQsd()
    {
        using var dir = new TempDir();
        var overlay = WrittenOverlay(dir);
        var (vdisk, qsd) = BothDaemons(overlay, "qcow2", writable: true, socket =>
            Run("nbdinfo", "--map=qemu:allocation-depth", Serve.Uri(socket)) + Run("nbdinfo", "--json", Serve.Uri(socket)) +
            Run("nbdinfo", "--list", Serve.Uri(socket, "")), exportOptions: ",allocation-depth=on");
        Assert.Equal(qsd, vdisk);
        Assert.Contains("local", vdisk);
        Assert.Contains("backing depth 2", vdisk);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Nbdcopy_OutOfARawExport_CopiesTheGuestView(bool writable) => CopyOut("raw", writable);

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Nbdcopy_OutOfAQcow2Export_CopiesTheGuestView(bool writable) => CopyOut("qcow2", writable);

    private static void CopyOut(string format, bool writable)
    {
        using var dir = new TempDir();
        var image = format == "raw" ? Serve.PatternedRaw(dir) : Serve.PatternedQcow2(dir);
        var socket = dir.File("v.sock");
        var copy = dir.File("copy.raw");
        using (Daemon.Vdisk([.. Serve.Blockdevs(image, format), .. Serve.NbdServer(socket), .. Serve.Export(writable: writable), .. Serve.Monitor(dir.File("m.sock"))], dir.File("m.sock")))
        {
            Run("nbdcopy", Serve.Uri(socket), copy);
            Assert.Equal("Images are identical.\n", Run("qemu-img", "compare", "-U", "-f", format, "-F", "raw", image, copy));
            Assert.Equal("Images are identical.\n", Run("qemu-img", "compare", "-f", "raw", "-F", "raw", Serve.Uri(socket), copy));
        }
    }

    [Fact]
    public void Nbdcopy_IntoAWritableRawExport_WritesTheImage() => CopyIn("raw");

    [Fact]
    public void Nbdcopy_IntoAWritableQcow2Export_WritesTheImage() => CopyIn("qcow2");

    private static void CopyIn(string format)
    {
        using var dir = new TempDir();
        var source = Serve.PatternedRaw(dir, "source.raw");
        Serve.Check(Programs.Run("qemu-io", "-f", "raw", source, "-c", "write -P 0x5a 2M 100k"));
        var target = format == "raw" ? dir.RawImage("target.raw", 4 << 20) : Serve.PatternedQcow2(dir, "target.qcow2");
        var socket = dir.File("v.sock");
        using (var d = Daemon.Vdisk([.. Serve.Blockdevs(target, format), .. Serve.NbdServer(socket), .. Serve.Export(writable: true), .. Serve.Monitor(dir.File("m.sock"))], dir.File("m.sock")))
        {
            Run("nbdcopy", source, Serve.Uri(socket));
            Assert.Equal(0, d.Signal());
        }
        Assert.Equal("Images are identical.\n", Run("qemu-img", "compare", "-f", "raw", "-F", format, source, target));
    }

    [Fact]
    public void QemuImg_InfoCompareAndConvert_OverNbd()
    {
        using var dir = new TempDir();
        var image = Serve.PatternedRaw(dir);
        var socket = dir.File("v.sock");
        using var d = Daemon.Vdisk([.. Serve.Blockdevs(image, "raw"), .. Serve.NbdServer(socket), .. Serve.Export(), .. Serve.Monitor(dir.File("m.sock"))], dir.File("m.sock"));
        var uri = Serve.Uri(socket);
        Assert.Contains("virtual size: 4 MiB (4194304 bytes)", Run("qemu-img", "info", uri));
        Assert.Equal("Images are identical.\n", Run("qemu-img", "compare", uri, image));
        var converted = dir.File("converted.qcow2");
        Run("qemu-img", "convert", "-O", "qcow2", uri, converted);
        Assert.Equal("Images are identical.\n", Run("qemu-img", "compare", "-f", "qcow2", "-F", "raw", converted, image));
        Assert.Contains("\"data\": false", Run("qemu-img", "map", "--output=json", "-f", "raw", uri));
    }

    [Fact]
    public void QemuImg_ConvertIntoAWritableExport()
    {
        using var dir = new TempDir();
        var source = Serve.PatternedRaw(dir, "source.raw");
        var target = dir.RawImage("target.raw", 4 << 20);
        var socket = dir.File("v.sock");
        using var d = Daemon.Vdisk([.. Serve.Blockdevs(target, "raw"), .. Serve.NbdServer(socket), .. Serve.Export(writable: true), .. Serve.Monitor(dir.File("m.sock"))], dir.File("m.sock"));
        Run("qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", source, Serve.Uri(socket));
        Assert.Equal("Images are identical.\n", Run("qemu-img", "compare", "-f", "raw", "-F", "raw", source, Serve.Uri(socket)));
    }

    [Fact]
    public void QemuIo_ReadsPatterns_AndWritesThroughAWritableExport()
    {
        using var dir = new TempDir();
        var image = Serve.PatternedRaw(dir);
        var socket = dir.File("v.sock");
        using (var d = Daemon.Vdisk([.. Serve.Blockdevs(image, "raw"), .. Serve.NbdServer(socket), .. Serve.Export(writable: true), .. Serve.Monitor(dir.File("m.sock"))], dir.File("m.sock")))
        {
            var uri = Serve.Uri(socket);
            var r = Programs.Run("qemu-io", "-f", "raw", uri, "-c", "read -P 0xab 0 64k", "-c", "read -P 0 64k 960k", "-c", "read -P 0xcd 1M 64k",
                "-c", "write -P 0x77 3M 8k", "-c", "read -P 0x77 3M 8k", "-c", "write -z 1M 4k", "-c", "read -P 0 1M 4k", "-c", "discard 2M 64k", "-c", "flush");
            Assert.True(r.ExitCode == 0 && !r.Stdout.Contains("Pattern verification failed"), r.ToString());
            Assert.Equal(0, d.Signal());
        }
        var check = Programs.Run("qemu-io", "-r", "-f", "raw", image, "-c", "read -P 0x77 3M 8k", "-c", "read -P 0 1M 4k", "-c", "read -P 0xcd 1052672 60k");
        Assert.True(check.ExitCode == 0 && !check.Stdout.Contains("Pattern verification failed"), check.ToString());
    }

    [Fact]
    public void QemuIo_WritingToAReadOnlyExport_IsRefused()
    {
        using var dir = new TempDir();
        var image = Serve.PatternedRaw(dir);
        var socket = dir.File("v.sock");
        using var d = Daemon.Vdisk([.. Serve.Blockdevs(image, "raw"), .. Serve.NbdServer(socket), .. Serve.Export(writable: false), .. Serve.Monitor(dir.File("m.sock"))], dir.File("m.sock"));
        // qemu-io opens read-write by default, which the read-only export refuses up front.
        var r = Programs.Run("qemu-io", "-f", "raw", Serve.Uri(socket), "-c", "write 0 4k");
        Assert.NotEqual(0, r.ExitCode);
        var ro = Programs.Run("qemu-io", "-r", "-f", "raw", Serve.Uri(socket), "-c", "read -P 0xab 0 4k");
        Assert.True(ro.ExitCode == 0 && !ro.Stdout.Contains("Pattern verification failed"), ro.ToString());
    }
}
