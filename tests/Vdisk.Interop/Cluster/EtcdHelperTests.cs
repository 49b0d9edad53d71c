using Vdisk.Interop.Support;
using Xunit;

namespace Vdisk.Interop.Cluster;

/// <summary>The etcd helper (vdisk-etcd) as users meet it: only a cluster lock starts it, and a missing one is a plain error.</summary>
public class EtcdHelperTests
{
    private static string Image()
    {
        string path = Path.Combine(Path.GetTempPath(), $"vdisk-helper-{Guid.NewGuid():N}.raw");
        File.WriteAllBytes(path, new byte[1 << 20]);
        return path;
    }

    [Fact]
    public void AMissingHelper_IsOneLine_NamingWhereItWasLookedFor()
    {
        string image = Image();
        try
        {
            var env = new Dictionary<string, string>
            {
                ["VDISK_ETCD_ENDPOINTS"] = "http://127.0.0.1:1",
                ["VDISK_ETCD_AGENT"] = "/nonexistent/vdisk-etcd",
            };
            var run = Programs.Run(Programs.Vdisk, ["io", "--image-opts", $"driver=raw,file.driver=file,file.filename={image},file.cluster-lock-id=x", "-c", "read 0 512"], env);
            Assert.Equal(1, run.ExitCode);
            Assert.Equal("", run.Stdout);
            Assert.Equal("vdisk: can't open: cluster locks need vdisk-etcd: /nonexistent/vdisk-etcd: No such file or directory\n", run.Stderr);

            // Without a cluster lock the helper is never looked for.
            var local = Programs.Run(Programs.Vdisk, ["io", "-f", "raw", image, "-c", "read 0 512"], env);
            Assert.Equal(0, local.ExitCode);
            Assert.Equal("", local.Stderr);
        }
        finally
        {
            File.Delete(image);
        }
    }

    [Fact]
    public void TheHelperBesideVdisk_ReportsEtcdsOwnError()
    {
        string image = Image();
        try
        {
            var run = Programs.Run(Programs.Vdisk, ["io", "--image-opts", $"driver=raw,file.driver=file,file.filename={image},file.cluster-lock-id=x", "-c", "read 0 512"],
                new Dictionary<string, string> { ["VDISK_ETCD_ENDPOINTS"] = "http://127.0.0.1:1" });
            Assert.Equal(1, run.ExitCode);
            Assert.Equal("vdisk: can't open: etcd unreachable while granting a lease: http://127.0.0.1:1 (Connection refused)\n", run.Stderr);
        }
        finally
        {
            File.Delete(image);
        }
    }
}
