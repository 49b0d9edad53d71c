using Vdisk.Interop.Support;
using Xunit;

namespace Vdisk.Interop;

public class SampleTests
{
    [Fact]
    public void OpenAndReadSample_RunsAndShowsTheRefusal()
    {
        string config = AppContext.BaseDirectory.Contains("/bin/Release/", StringComparison.Ordinal) ? "Release" : "Debug";
        string dll = Path.Combine(Programs.RepoRoot, "samples", "OpenAndRead", "bin", config, "net10.0", "OpenAndRead.dll");
        Assert.True(System.IO.File.Exists(dll), dll + " was not built");
        using var dir = new TempDir();
        var img = dir.RawImage();
        var r = Programs.Run("dotnet", dll, img);
        Assert.Equal(0, r.ExitCode);
        Assert.Contains("read back the same bytes", r.Stdout);
        Assert.Contains($"second writer refused: Failed to get \"write\" lock (Is another process using the image [{img}]?)", r.Stdout);
        Assert.Contains("reader admitted", r.Stdout);
        // The sector it wrote is what QEMU reads.
        Assert.Equal(0, Programs.Run("qemu-io", "-r", "-f", "raw", img, "-c", "read -P 0x5a 0 512").ExitCode);
    }
}
