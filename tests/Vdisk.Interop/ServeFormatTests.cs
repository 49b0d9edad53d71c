using Vdisk.Interop.Support;
using Xunit;

namespace Vdisk.Interop;

/// <summary>
/// vdisk serve exports the formats people bring (vmdk with several extent files, luks, and the
/// null driver QEMU's tests use) as qemu-storage-daemon 7.2 does: the same map and contents over
/// NBD, and the same lock bytes on every file, extents included.
/// </summary>
public class ServeFormatTests
{
    /// <param name="Blockdevs">The daemon's nodes; the one exported is "disk".</param>
    /// <param name="Files">The image's files, each of which carries lock bytes.</param>
    /// <param name="Compare">qemu-img compare arguments checking a raw copy against the image as qemu-img reads it.</param>
    private sealed record Case(string[] Blockdevs, string[] Files, Func<string, string[]> Compare);

    private static Case Prepare(TempDir dir, string format)
    {
        switch (format)
        {
            case "vmdk":
            {
                // Three files: the descriptor and two 2 GiB extents, data across the boundary.
                var image = dir.File("disk.vmdk");
                Serve.Check(Programs.Run("qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentSparse", image, "3G"));
                Serve.Check(Programs.Run("qemu-io", "-f", "vmdk", image, "-c", "write -P 0x33 2047M 2M", "-c", "write -P 0x34 0 64k"));
                return new(["--blockdev", $"driver=file,node-name=disk-file,filename={image}", "--blockdev", "driver=vmdk,node-name=disk,file=disk-file"],
                    [image, dir.File("disk-s001.vmdk"), dir.File("disk-s002.vmdk")], copy => ["-f", "raw", "-F", "vmdk", copy, image]);
            }
            case "luks":
            {
                var image = dir.File("disk.luks");
                // A short PBKDF2 time: every open derives the key again.
                Serve.Check(Qemu.ImgCreateEncrypted("create", "-q", "-f", "luks", "--object", "secret,id=s0,data=pw", "-o", "key-secret=s0,iter-time=10", image, "4M"));
                Serve.Check(Programs.Run("qemu-io", "--object", "secret,id=s0,data=pw", "--image-opts", $"driver=luks,file.filename={image},key-secret=s0", "-c", "write -P 0x44 64k 64k"));
                return new(["--object", "secret,id=s0,data=pw", "--blockdev", $"driver=file,node-name=disk-file,filename={image}",
                    "--blockdev", "driver=luks,node-name=disk,file=disk-file,key-secret=s0"], [image],
                    copy => ["--object", "secret,id=s0,data=pw", "--image-opts", $"driver=raw,file.filename={copy}", $"driver=luks,file.filename={image},key-secret=s0"]);
            }
            default:
                return new(["--blockdev", $"driver={format},node-name=disk,size=1048576,read-zeroes=on"], [],
                    copy => ["--image-opts", $"driver=raw,file.filename={copy}", $"driver={format},size=1048576,read-zeroes=on"]);
        }
    }

    public static TheoryData<string, bool> Cases => new()
    {
        { "vmdk", false }, { "vmdk", true }, { "luks", false }, { "luks", true }, { "null-co", false }, { "null-aio", true },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void An_export_maps_reads_and_locks_like_qsds(string format, bool writable)
    {
        string Observe(bool vdisk)
        {
            using var dir = new TempDir();
            var c = Prepare(dir, format);
            string socket = dir.File("n.sock"), qmp = dir.File("m.sock");
            string[] args = [.. c.Blockdevs, .. Serve.NbdServer(socket), .. Serve.Export(writable: writable), .. Serve.Monitor(qmp)];
            using var daemon = vdisk ? Daemon.Vdisk(args, qmp) : Daemon.Qsd(args, qmp);
            var map = Programs.Run("nbdinfo", "--map", Serve.Uri(socket));
            var copy = dir.File("copy.raw");
            var nbdcopy = Programs.Run("nbdcopy", Serve.Uri(socket), copy);
            Assert.True(nbdcopy.ExitCode == 0, nbdcopy.ToString());
            // -U: the daemon still holds the image.
            var compare = Programs.Run("qemu-img", ["compare", "-U", .. c.Compare(copy)], null);
            var locks = c.Files.Select(f => $"{Path.GetFileName(f)}: {LockBytesHeld.Describe(LockBytesHeld.Read(daemon.Pid, f))}");
            return $"{map.Stdout}{map.Stderr}{compare.Stdout}{compare.Stderr}{string.Join("\n", locks)}".Replace(dir.Path, "{dir}");
        }
        string qsd = Observe(vdisk: false), vdiskView = Observe(vdisk: true);
        Assert.Equal(qsd, vdiskView);
        Assert.Contains("Images are identical.", vdiskView, StringComparison.Ordinal);
        if (format == "vmdk") Assert.Contains("disk-s002.vmdk: 100", vdiskView, StringComparison.Ordinal);
    }
}
