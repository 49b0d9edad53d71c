using Vdisk.Interop.Support;
using Xunit;

namespace Vdisk.Interop;

/// <summary>
/// qemu-io's <c>-C</c> (copy-on-read), the <c>copy-on-read</c> filter and <c>-s</c> (a temporary
/// overlay), side by side with qemu-io 7.2: the same output, the same image afterwards (what was
/// copied, where it is allocated), and with <c>-s</c> an image left untouched.
/// </summary>
public class CopyOnReadAndSnapshotTests
{
    /// <summary>A 4 MiB qcow2 base with data in two places, under a qcow2 overlay with one zero cluster of its own.</summary>
    private static (string Base, string Overlay) MakeChain(TempDir dir, string name)
    {
        string baseImage = dir.File(name + "-base.qcow2"), overlay = dir.File(name + ".qcow2");
        Assert.Equal(0, Programs.Run("qemu-img", "create", "-q", "-f", "qcow2", baseImage, "4M").ExitCode);
        Assert.Equal(0, Programs.Run("qemu-io", "-f", "qcow2", "-c", "write -P 0x55 1000k 100k", "-c", "write -P 0x66 3M 4k", baseImage).ExitCode);
        Assert.Equal(0, Programs.Run("qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", baseImage, overlay).ExitCode);
        Assert.Equal(0, Programs.Run("qemu-io", "-f", "qcow2", "-c", "write -z -u 1M 64k", overlay).ExitCode);
        return (baseImage, overlay);
    }

    private static string Map(string image) => Programs.Run("qemu-io", "-r", "-f", "qcow2", "-c", "map", image).Stdout;

    [Theory]
    // qemu-io -C: the top node copies.
    [InlineData(new[] { "-f", "qcow2", "-C" }, "read -P 0x55 1000k 100k | read -P 0 1M 128k | read 0 0 | read -P 0x66 3M 4k")]
    // A read that covers the overlay's own cluster leaves it as it is and copies the one next to it.
    [InlineData(new[] { "-f", "qcow2", "-C" }, "read -P 0 1M 128k | read -v 2M 16")]
    // The copy-on-read filter over the qcow2 node.
    [InlineData(new[] { "--image-opts" }, "read -P 0x55 1000k 100k | read -P 0 1M 128k | read -P 0x66 3M 4k | write -P 7 2M 4k | read -P 7 2M 4k")]
    public void CopyOnRead_CopiesWhatTheBackingChainHolds_AsQemuIoDoes(string[] options, string script)
    {
        using var dir = new TempDir();
        var (_, q) = MakeChain(dir, "q");
        var (_, v) = MakeChain(dir, "v");
        string[] commands = [.. script.Split(" | ").SelectMany(c => new[] { "-c", c })];
        string[] Args(string image) => options.Contains("--image-opts")
            ? [.. options, $"driver=copy-on-read,file.driver=qcow2,file.file.filename={image}", .. commands]
            : [.. options, image, .. commands];
        var qr = Programs.Run("qemu-io", Args(q));
        var vr = Programs.Run(Programs.Vdisk, ["io", .. Args(v)]);
        Assert.Equal((qr.ExitCode, ToolOutputTests.Normalize(qr.Stdout), qr.Stderr), (vr.ExitCode, ToolOutputTests.Normalize(vr.Stdout), vr.Stderr));
        // What was copied into the overlay, and where: the same clusters as QEMU's.
        Assert.Equal(Map(q), Map(v));
        Assert.NotEqual(Map(MakeChain(dir, "untouched").Overlay), Map(v));
        Assert.Equal(0, Programs.Run("qemu-img", "check", "-q", v).ExitCode);
        Assert.Equal(0, Programs.Run("qemu-img", "compare", "-q", q, v).ExitCode);
    }

    [Fact]
    public void CopyOnRead_ReadOnly_IsRefusedWithQemuIosWords()
    {
        using var dir = new TempDir();
        var (_, overlay) = MakeChain(dir, "o");
        foreach (var args in new[]
        {
            new[] { "-f", "qcow2", "-C", "-r", overlay },
            new[] { "-c", $"open -C -r -o driver=qcow2 {overlay}" },
            new[] { "-c", $"open -r -o driver=copy-on-read,file.driver=qcow2 {overlay}" },
        })
        {
            var q = Programs.Run("qemu-io", args);
            var v = Programs.Run(Programs.Vdisk, ["io", .. args]);
            Assert.Contains("read-only", q.Stderr);
            Assert.Equal((q.ExitCode, q.Stderr.Replace("qemu-io: ", "vdisk: ")), (v.ExitCode, v.Stderr));
        }
        // Nothing was copied.
        Assert.Equal(Map(MakeChain(dir, "fresh").Overlay), Map(overlay));
    }

    [Theory]
    [InlineData(new[] { "-s" }, "write -P 0xa 0 1M | read -P 0xa 0 1M | write -z 512k 4k | read -P 0 512k 4k | map")]
    [InlineData(new string[0], "open -s -o driver=qcow2 IMAGE | write -P 0xb 64k 64k | read -P 0xb 64k 64k | close | open -o driver=qcow2 IMAGE | read -P 1 64k 64k")]
    public void Snapshot_WritesGoToATemporaryOverlay_AndTheImageIsUntouched(string[] options, string script)
    {
        using var dir = new TempDir();
        var tmp = Directory.CreateDirectory(dir.File("tmp")).FullName;
        var env = new Dictionary<string, string> { ["TMPDIR"] = tmp };
        string q = dir.File("q.qcow2"), v = dir.File("v.qcow2"), pristine = dir.File("pristine.qcow2");
        foreach (var image in new[] { q, v, pristine })
        {
            Assert.Equal(0, Programs.Run("qemu-img", "create", "-q", "-f", "qcow2", image, "2M").ExitCode);
            Assert.Equal(0, Programs.Run("qemu-io", "-f", "qcow2", "-c", "write -P 1 0 128k", image).ExitCode);
        }
        string[] Args(string image)
        {
            string[] commands = [.. script.Replace("IMAGE", image).Split(" | ").SelectMany(c => new[] { "-c", c })];
            return script.StartsWith("open", StringComparison.Ordinal) ? commands : [.. options, "-f", "qcow2", image, .. commands];
        }
        var qr = Programs.Run("qemu-io", Args(q), env);
        var vr = Programs.Run(Programs.Vdisk, ["io", .. Args(v)], env);
        Assert.Equal((qr.ExitCode, ToolOutputTests.Normalize(qr.Stdout).Replace(q, "IMG"), qr.Stderr),
            (vr.ExitCode, ToolOutputTests.Normalize(vr.Stdout).Replace(v, "IMG"), vr.Stderr));
        Assert.Equal(0, vr.ExitCode);
        // Neither the image nor its allocation changed; no overlay is left behind.
        Assert.Equal(0, Programs.Run("qemu-img", "compare", "-q", pristine, v).ExitCode);
        Assert.Equal(Map(pristine), Map(v));
        Assert.Empty(Directory.GetFileSystemEntries(tmp, "vl.*"));
    }

    [Fact]
    public void Snapshot_HoldsTheImageAsABackingFile_WithQemuIosLockBytes()
    {
        using var dir = new TempDir();
        var tmp = Directory.CreateDirectory(dir.File("tmp")).FullName;
        var env = new Dictionary<string, string> { ["TMPDIR"] = tmp };
        string image = dir.File("held.qcow2");
        Assert.Equal(0, Programs.Run("qemu-img", "create", "-q", "-f", "qcow2", image, "1M").ExitCode);
        SortedSet<int> Held(string program, string[] prefix)
        {
            using var holder = Holder.Start(image, program, [.. prefix, "-s", "-f", "qcow2", image, "-c", "sleep 60000"], env);
            // The image is held as a backing file is: read, with writers kept out.
            var writer = Programs.Run("qemu-io", "-f", "qcow2", "-c", "write -P 2 0 512", image);
            Assert.Equal(1, writer.ExitCode);
            Assert.Contains("Failed to get \"write\" lock", writer.Stderr);
            Assert.Equal(0, Programs.Run("qemu-io", "-r", "-f", "qcow2", "-c", "read 0 512", image).ExitCode);
            // The overlay's file already has no name, as QEMU's.
            Assert.Empty(Directory.GetFileSystemEntries(tmp, "vl.*"));
            return LockBytesHeld.Read(holder.Pid, image);
        }
        var q = Held("qemu-io", []);
        var v = Held(Programs.Vdisk, ["io"]);
        Assert.Equal(LockBytesHeld.Describe(q), LockBytesHeld.Describe(v));
    }
}
