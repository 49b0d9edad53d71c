using Vdisk.Interop.Support;
using Xunit;
using static Vdisk.Interop.Support.Qemu;

namespace Vdisk.Interop.Nbd;

/// <summary>
/// NBD exports as backing files: a qcow2 overlay whose backing file name is an <c>nbd://</c> or
/// <c>nbd+unix://</c> URL, made by <c>create -b URL -F raw</c> and read through the chain, as
/// qemu-img and qemu-io do it against qemu-nbd, qemu-storage-daemon and vdisk serve.
/// </summary>
public partial class NbdClientTests
{
    [Theory]
    [MemberData(nameof(Servers))]
    public void Overlay_OnAnNbdExport_IsMadeAndReadLikeQemu(string kind)
    {
        using var dir = new TempDir();
        var image = Serve.PatternedRaw(dir);
        using var server = Start(kind, dir, image, writable: false);
        string q = dir.File("q.qcow2"), v = dir.File("v.qcow2");

        // create takes the size from the export, and says what qemu-img says.
        var theirs = Img("create", "-f", "qcow2", "-b", server.Uri, "-F", "raw", q);
        var mine = Qemu.Vdisk("create", "-f", "qcow2", "-b", server.Uri, "-F", "raw", v);
        Assert.Equal(Seen(theirs).Replace(q, "IMG"), Seen(mine).Replace(v, "IMG"));
        Ok(Img("check", v));
        Assert.Equal(Ok(Img("info", "--output=json", q)).Stdout.Replace(q, "IMG"), Ok(Img("info", "--output=json", v)).Stdout.Replace(v, "IMG"));

        // Both read the export through either overlay.
        foreach (var overlay in new[] { q, v })
        {
            SameAsQemuImg("info", "--backing-chain", overlay);
            SameAsQemuImg("info", "--backing-chain", "--output=json", overlay);
            SameAsQemuImg("map", "--output=json", overlay);
            SameAsQemuImg("compare", "-F", "raw", overlay, image);
            SameAsQemuIo("-r", "-c", "read -P 0xab 0 64k", "-c", "read -P 0 64k 64k", "-c", "read -P 0xcd 1M 64k", overlay);
        }

        // Writes land in the overlay; the export is untouched and still shows through elsewhere.
        Ok(Io("-c", "write -P 0x77 1M 4k", q));
        Ok(Qemu.Vdisk("io", "-c", "write -P 0x77 1M 4k", v));
        Ok(Img("check", v));
        // One overlay at a time: qemu-nbd serves one client at a time.
        string qr = dir.File("q.raw"), vr = dir.File("v.raw");
        Ok(Img("convert", "-O", "raw", q, qr));
        Ok(Img("convert", "-O", "raw", v, vr));
        Assert.Equal(File.ReadAllBytes(qr), File.ReadAllBytes(vr));
        SameAsQemuIo("-r", "-c", "read -P 0x77 1M 4k", "-c", "read -P 0xcd 1052672 60k", v);
    }

    /// <summary>
    /// A qcow2 image served over NBD whose backing name is relative: export names are no paths
    /// (nbd_dirname), so info cannot say where the backing file is, the chain cannot be
    /// followed, and opening fails, all in QEMU's words (vdisk used to resolve the name against
    /// the URL and try to connect to a socket named like the backing file).
    /// </summary>
    [Theory]
    [InlineData("qemu-nbd")]
    [InlineData("vdisk")]
    public void A_relative_backing_name_behind_an_NBD_export_cannot_be_resolved(string kind)
    {
        using var dir = new TempDir();
        string baseImage = dir.File("base.qcow2"), top = dir.File("top.qcow2");
        Ok(Img("create", "-q", "-f", "qcow2", baseImage, "1M"));
        Ok(Img("create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", top));
        // The export is the qcow2 file itself (raw); the client opens it as qcow2.
        using var server = Start(kind, dir, top, writable: false);
        SameAsQemuImg("info", "-f", "qcow2", server.Uri);
        SameAsQemuImg("info", "--backing-chain", "-f", "qcow2", server.Uri);
        SameAsQemuImg("map", "-f", "qcow2", server.Uri);
        var map = Programs.Run(Programs.Vdisk, "map", "-f", "qcow2", server.Uri);
        Assert.Contains("Cannot generate a base directory for NBD nodes", map.Stderr, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("qemu-nbd")]
    [InlineData("qsd")]
    public void Overlay_OnAnNbdExport_FailsLikeQemuWhenTheExportIsWrongOrGone(string kind)
    {
        using var dir = new TempDir();
        var image = Serve.PatternedRaw(dir);
        string overlay = dir.File("top.qcow2");
        string socket;
        using (var server = Start(kind, dir, image, writable: false))
        {
            socket = server.Socket!;
            Ok(Img("create", "-q", "-f", "qcow2", "-b", server.Uri, "-F", "raw", overlay));
            // No backing format: refused with the detected one named.
            var q = Img("create", "-f", "qcow2", "-b", server.Uri, dir.File("q2.qcow2"));
            var v = Qemu.Vdisk("create", "-f", "qcow2", "-b", server.Uri, dir.File("v2.qcow2"));
            Assert.Equal(Seen(q).Replace("q2.qcow2", "IMG"), Seen(v).Replace("v2.qcow2", "IMG"));
            // An export name the server does not have.
            string wrong = $"nbd+unix:///nope?socket={socket}";
            q = Img("create", "-f", "qcow2", "-b", wrong, "-F", "raw", dir.File("q3.qcow2"));
            v = Qemu.Vdisk("create", "-f", "qcow2", "-b", wrong, "-F", "raw", dir.File("v3.qcow2"));
            Assert.Equal(Seen(q).Replace("q3.qcow2", "IMG"), Seen(v).Replace("v3.qcow2", "IMG"));
        }
        // The server is gone: opening the overlay fails on its backing file, in QEMU's words.
        SameAsQemuIo("-r", "-c", "read 0 4k", overlay);
        SameAsQemuImg("info", "--backing-chain", overlay);
        // -u: the backing file is not opened; its size must be given.
        string gone = $"nbd+unix:///disk?socket={socket}";
        var theirs = Img("create", "-f", "qcow2", "-u", "-b", gone, "-F", "raw", dir.File("q4.qcow2"), "1M");
        var mine = Qemu.Vdisk("create", "-f", "qcow2", "-u", "-b", gone, "-F", "raw", dir.File("v4.qcow2"), "1M");
        Assert.Equal(Seen(theirs).Replace("q4.qcow2", "IMG"), Seen(mine).Replace("v4.qcow2", "IMG"));
    }
}
