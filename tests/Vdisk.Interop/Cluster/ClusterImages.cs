using Vdisk.Interop.Support;

namespace Vdisk.Interop.Cluster;

/// <summary>Images for the cluster tests: each simulated host has its own copy (its own path to the shared LUN).</summary>
public static class ClusterImages
{
    public static string Qcow2(TempDir dir, string name, string size = "1M")
    {
        string path = dir.File(name);
        var r = Programs.Run("qemu-img", "create", "-q", "-f", "qcow2", path, size);
        if (r.ExitCode != 0) throw new InvalidOperationException(r.ToString());
        return path;
    }

    public static string Raw(TempDir dir, string name, long size = 1 << 20) => dir.RawImage(name, size);

    /// <summary>The bytes of a file (to prove nothing was written).</summary>
    public static byte[] Bytes(string path) => File.ReadAllBytes(path);
}
