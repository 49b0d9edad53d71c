using Vdisk.Interop.Support;
using Xunit;

namespace Vdisk.Interop;

/// <summary>
/// The blockdev options <c>discard=</c> and <c>detect-zeroes=</c> through an NBD export: the
/// same client requests (TRIM, WRITE_ZEROES with and without NO_HOLE, writes of zero buffers)
/// leave the image exactly as qemu-storage-daemon 7.2 leaves it — what it reads as (qemu-img
/// map) and what it occupies on the host (allocated blocks).
/// </summary>
public class ServeDiscardTests
{
    /// <summary>
    /// Serves a fully written 4 MiB image with the given node options, runs one qemu-io command
    /// through NBD, stops the daemon and describes the image.
    /// </summary>
    private static string Outcome(bool vdisk, string format, string fileOptions, string nodeOptions, string command)
    {
        using var dir = new TempDir();
        string image = dir.File("disk." + format), nbd = dir.File("n.sock");
        Serve.Check(Programs.Run("qemu-img", "create", "-q", "-f", format, image, "4M"));
        Serve.Check(Programs.Run("qemu-io", "-f", format, image, "-c", "write -P 0xab 0 4M"));
        long fullyWritten = long.Parse(Programs.Run("stat", "-c", "%b", image).Stdout.Trim(), System.Globalization.CultureInfo.InvariantCulture);
        string[] args =
        [
            "--blockdev", $"driver=file,node-name=f0,filename={Serve.Escape(image)}{fileOptions}",
            "--blockdev", $"driver={format},node-name=disk,file=f0{nodeOptions}",
            .. Serve.NbdServer(nbd), .. Serve.Export(writable: true),
        ];
        using (var d = vdisk ? Daemon.Vdisk(args, nbd) : Daemon.Qsd(args, nbd))
        {
            var io = Programs.Run("qemu-io", "-f", "raw", Serve.Uri(nbd), "-c", command);
            Serve.Check(io);
            Assert.Equal(0, d.Signal());
        }
        var map = Programs.Run("qemu-img", "map", "--output=json", "-f", format, image);
        Serve.Check(map);
        var blocks = Programs.Run("stat", "-c", "%b", image);
        Serve.Check(blocks);
        long allocated = long.Parse(blocks.Stdout.Trim(), System.Globalization.CultureInfo.InvariantCulture);
        // Raw: the exact allocation. qcow2: whether the host file got holes (the metadata
        // blocks the driver writes around a discard differ in when, not in what they mean).
        string host = format == "raw" ? $"blocks {allocated}" : $"punched {allocated < fullyWritten}";
        return $"{map.Stdout.Trim()}\n{host}";
    }

    public static TheoryData<string, string, string, string> Cases => new()
    {
        // TRIM is dropped unless every node it passes has discard=unmap.
        { "raw", "", "", "discard 0 1M" },
        { "raw", "", ",discard=unmap", "discard 0 1M" },
        { "raw", ",discard=unmap", "", "discard 0 1M" },
        { "raw", ",discard=unmap", ",discard=unmap", "discard 0 1M" },
        // WRITE_ZEROES without NO_HOLE may punch only where the file node has discard=unmap.
        { "raw", "", "", "write -z -u 0 1M" },
        { "raw", ",discard=unmap", "", "write -z -u 0 1M" },
        { "raw", ",discard=unmap", ",discard=unmap", "write -z 0 1M" },
        // detect-zeroes turns a write of zeroes into a zero write (unmapping with =unmap).
        { "raw", "", "", "write -P 0 0 1M" },
        { "raw", "", ",detect-zeroes=on", "write -P 0 0 1M" },
        { "raw", ",detect-zeroes=on", "", "write -P 0 0 1M" },
        { "raw", ",discard=unmap", ",discard=unmap,detect-zeroes=unmap", "write -P 0 0 1M" },
        { "qcow2", "", "", "discard 0 1M" },
        { "qcow2", "", ",discard=unmap", "discard 0 1M" },
        { "qcow2", ",discard=unmap", ",discard=unmap", "discard 0 1M" },
        { "qcow2", "", ",detect-zeroes=on", "write -P 0 0 1M" },
        { "qcow2", "", ",discard=unmap,detect-zeroes=unmap", "write -P 0 0 1M" },
        { "qcow2", ",discard=unmap", ",discard=unmap", "write -z -u 0 1M" },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void NbdDiscardAndZeroes_LeaveTheImageAsQsdDoes(string format, string fileOptions, string nodeOptions, string command)
    {
        string qsd = Outcome(vdisk: false, format, fileOptions, nodeOptions, command);
        string vdisk = Outcome(vdisk: true, format, fileOptions, nodeOptions, command);
        Assert.Equal(qsd, vdisk);
    }
}
