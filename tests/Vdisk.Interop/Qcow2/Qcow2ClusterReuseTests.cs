using Vdisk.Interop.Support;
using Xunit;

namespace Vdisk.Interop.Qcow2;

/// <summary>
/// Clusters freed by a discard, an unmapping zero write or a copy-on-write are free at once in
/// QEMU (qcow2_free_clusters lowers the refcount and moves free_cluster_index back), so the next
/// allocations take them: the same qemu-io script on vdisk and on qemu-io maps every guest range
/// to the same host offsets, and vdisk's image passes qemu-img check.
/// </summary>
public class Qcow2ClusterReuseTests
{
    private static string Map(string image) => Qemu.Ok(Qemu.Img("map", "--output=json", image)).Stdout;

    private static void AssertSameLayoutAfter(string createOptions, string size, params string[][] runs)
    {
        using var dir = new TempDir();
        string mine = dir.File("mine.qcow2"), theirs = dir.File("theirs.qcow2");
        Qemu.Ok(Qemu.Img("create", "-q", "-f", "qcow2", "-o", createOptions, mine, size));
        Qemu.Ok(Qemu.Img("create", "-q", "-f", "qcow2", "-o", createOptions, theirs, size));
        // Each run is one process: its end flushes, so frees cross a close as well as within one.
        foreach (var commands in runs)
        {
            Qemu.Ok(Programs.Run(Programs.VdiskAs("qemu-io"), [.. Qemu.Commands(commands), mine]));
            Qemu.Ok(Qemu.Io([.. Qemu.Commands(commands), theirs]));
        }
        Qemu.AssertClean(mine);
        Assert.Equal(Map(theirs), Map(mine));
        Qemu.AssertIdentical(mine, theirs);
    }

    /// <summary>iotest 250 in small: discarded preallocated clusters are where the next writes go.</summary>
    [Fact]
    public void Writes_after_discards_of_preallocated_clusters_reuse_them_as_qemu_does() =>
        AssertSameLayoutAfter("cluster_size=64k,preallocation=metadata", "64M",
            ["discard 0 1M", "discard 63M 1M", "write -P 1 63M 1M", "write -P 2 0 1M"]);

    [Fact]
    public void Writes_after_a_discard_in_the_same_run_reuse_the_freed_clusters() =>
        AssertSameLayoutAfter("cluster_size=64k", "16M",
            ["write -P 1 0 4M", "discard 1M 1M", "write -P 2 8M 512k", "write -P 3 12M 256k", "write -P 4 1M 64k"]);

    [Fact]
    public void Writes_in_a_later_run_reuse_clusters_freed_by_discards_and_unmapping_zero_writes() =>
        AssertSameLayoutAfter("cluster_size=4k", "4M",
            ["write -P 1 0 1M", "write -P 5 3M 256k"],
            ["discard 128k 128k", "write -z -u 512k 64k"],
            ["write -P 2 2M 300k", "write -P 3 130k 8k"]);
}
