using Vdisk.Inspection;
using Vdisk.Interop.Support;
using Xunit;

namespace Vdisk.Interop;

/// <summary>Builds the LD_PRELOAD shim that makes OFD lock commands fail, as on an old kernel.</summary>
public sealed class NoOfdShim : IDisposable
{
    private readonly TempDir _dir = new();
    public string Path { get; }

    public NoOfdShim()
    {
        Path = _dir.File("no_ofd.so");
        var source = System.IO.Path.Combine(Programs.RepoRoot, "tests", "Vdisk.Interop", "Shim", "no_ofd.c");
        var r = Programs.Run("cc", "-shared", "-fPIC", "-O2", "-o", Path, source, "-ldl");
        if (r.ExitCode != 0) throw new InvalidOperationException("building the shim failed: " + r);
    }

    public Dictionary<string, string> Env => new() { ["LD_PRELOAD"] = Path };

    public void Dispose() => _dir.Dispose();
}

/// <summary>
/// Without OFD locks, locking=on falls back to POSIX locks with QEMU's warning, locking=auto
/// locks nothing; and unlike QEMU, closing a second node of the same file never drops the
/// POSIX locks the first node still needs.
/// </summary>
public class PosixFallbackTests(NoOfdShim shim) : IClassFixture<NoOfdShim>
{
    private const string Warning = "warning: File lock requested but OFD locking syscall is unavailable, falling back to POSIX file locks\n" +
        "Due to the implementation, locks can be lost unexpectedly.\n";

    private static string Opts(string img, string locking) => $"driver=raw,file.driver=file,file.filename={img},file.locking={locking}";

    private static List<KernelLock> PosixLocksOf(int pid, string img)
    {
        return KernelLock.ReadProcLocks().Where(l => l.Kind == KernelLockKind.Posix && l.Pid == pid).ToList();
    }

    [Fact]
    public void LockingOnWithoutOfd_WarnsLikeQemuAndTakesPosixLocks()
    {
        using var dir = new TempDir();
        var img = dir.RawImage();
        var q = Programs.Run("qemu-io", ["--image-opts", Opts(img, "on"), "-c", "read 0 1"], shim.Env);
        var v = Programs.Run(Programs.Vdisk, ["io", "--image-opts", Opts(img, "on"), "-c", "read 0 1"], shim.Env);
        Assert.Equal("qemu-io: " + Warning, q.Stderr);
        Assert.Equal("vdisk: " + Warning, v.Stderr);
        Assert.Equal(0, v.ExitCode);

        using var holder = Support.Holder.Start(img, Programs.Vdisk, ["io", "--image-opts", Opts(img, "on"), "-c", "sleep 60000"], shim.Env);
        var posix = PosixLocksOf(holder.Pid, img);
        Assert.Contains(posix, l => l.Covers(100));
        Assert.Contains(posix, l => l.Covers(101));
    }

    [Fact]
    public void LockingAutoWithoutOfd_LocksNothingLikeQemu()
    {
        using var dir = new TempDir();
        var img = dir.RawImage();
        using (var q = Support.Holder.Start(img, "qemu-io", ["--image-opts", Opts(img, "auto"), "-c", "sleep 60000"], shim.Env))
            Assert.DoesNotContain(KernelLock.ReadProcLocks(), l => l.Pid == q.Pid);
        using (var v = Support.Holder.Start(img, Programs.Vdisk, ["io", "--image-opts", Opts(img, "auto"), "-c", "sleep 60000"], shim.Env))
            Assert.DoesNotContain(KernelLock.ReadProcLocks(), l => l.Pid == v.Pid);
    }

    [Theory]
    [InlineData("on", true)]
    [InlineData("posix", false)]
    public void ClosingASecondNode_KeepsTheFirstNodesPosixLocks(string locking, bool useShim)
    {
        using var dir = new TempDir();
        var img = dir.RawImage();
        var env = useShim ? shim.Env : new Dictionary<string, string>();
        using var holder = Support.Holder.Start(img, Programs.LockProbe, ["twonodes", "opts:" + Opts(img, locking), "read,write", "write"], env);
        Assert.Equal("held\n", holder.Process.Stdout);
        var posix = PosixLocksOf(holder.Pid, img);
        Assert.Contains(posix, l => l.Covers(201));
        // A QEMU writer is still refused: the lock on 201 survived the second node's close.
        var r = Programs.Run("qemu-io", "-f", "raw", img, "-c", "write 0 4k");
        Assert.Equal("Failed to get \"write\" lock +hint", Outcome.Of(r));
    }

    [Fact]
    public void PosixMode_StillDetectsConflictsBetweenNodesOfOneProcess()
    {
        using var dir = new TempDir();
        var img = dir.RawImage();
        var source = ImageSource.FromImageOptions(Opts(img, "posix"));
        using var a = DiskImage.Open(source, Permissions.OpenFlags.ReadWrite, Permissions.BackendPermissions.GuestDevice(false, true, false));
        var e = Assert.Throws<Locking.LockConflictException>(() => DiskImage.Open(source, Permissions.OpenFlags.ReadWrite));
        Assert.Equal("Failed to get \"write\" lock", e.Message);
        Assert.Contains(KernelLock.ReadProcLocks(), l => l.Kind == KernelLockKind.Posix && l.Pid == Environment.ProcessId && l.Covers(201));
    }
}
