using Vdisk.Drivers.Qcow2;
using Vdisk.Interop.Support;
using Xunit;

namespace Vdisk.Interop.Qcow2;

/// <summary>Requests that run at once on one qcow2 node (as an NBD export runs them) see their own data.</summary>
public class Qcow2ConcurrencyTests
{
    [Fact]
    public async Task Parallel_reads_of_different_compressed_clusters_each_get_their_own_bytes()
    {
        using var dir = new TempDir();
        string raw = dir.File("patterns.raw"), img = dir.File("compressed.qcow2");
        const int clusterSize = 512, clusters = 8;
        Qemu.Ok(Qemu.Img("create", "-q", "-f", "raw", raw, $"{clusterSize * clusters}"));
        // Every cluster is filled with its own byte, so a cluster's bytes name the cluster.
        var commands = Enumerable.Range(0, clusters).Select(i => $"write -P 0x{i + 1:x2} {i * clusterSize} {clusterSize}");
        Qemu.Ok(Qemu.Io(["-f", "raw", .. Qemu.Commands(commands), raw]));
        Qemu.Ok(Qemu.Img("convert", "-q", "-c", "-f", "raw", "-O", "qcow2", "-o", $"cluster_size={clusterSize}", raw, img));
        Assert.Contains($"\"compressed-clusters\": {clusters},", Qemu.Ok(Qemu.Img("check", "--output=json", img)).Stdout);

        using var image = DiskImage.Open(ImageSource.FromFile(img, "qcow2"), Permissions.OpenFlags.None);
        Assert.IsType<Qcow2Node>(image.Root);
        const int readers = 16, readsEach = 25000;
        var wrong = new int[readers];
        var tasks = Enumerable.Range(0, readers).Select(r => Task.Run(async () =>
        {
            var buffer = new byte[clusterSize];
            for (int n = 0; n < readsEach; n++)
            {
                // Neighbouring readers share a cluster, so a cached cluster is read while another reader replaces it.
                int cluster = (r / 2 + n) % clusters;
                await image.Root.ReadAsync((long)cluster * clusterSize, buffer);
                if (buffer.AsSpan().IndexOfAnyExcept((byte)(cluster + 1)) >= 0) wrong[r]++;
            }
        })).ToArray();
        await Task.WhenAll(tasks);
        Assert.Equal(0, wrong.Sum());
    }
}
