using Vdisk.Inspection;
using Vdisk.Locking;
using Vdisk.Native;
using Xunit;

namespace Vdisk.Tests.Inspection;

/// <summary>The /proc reader against a fabricated /proc tree (locks, PID/fd links, fdinfo, cmdline).</summary>
public sealed class LockInspectorTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("vdisk-proc-").FullName;
    private readonly string _proc;
    private readonly string _image;
    private readonly FileIdentity _id;

    public LockInspectorTests()
    {
        _proc = Path.Combine(_root, "proc");
        Directory.CreateDirectory(_proc);
        _image = Path.Combine(_root, "disk.img");
        File.WriteAllBytes(_image, new byte[512]);
        _id = FileIdentity.OfPath(_image);
    }

    public void Dispose() => Directory.Delete(_root, true);

    private string Line(int n, string kind, string mode, int pid, string range) =>
        $"{n}: {kind} ADVISORY  {mode} {pid} {_id} {range.Replace('-', ' ')}";

    private void Process(int pid, string[] argv, params (int Fd, string Target, string[] LockLines)[] fds)
    {
        string dir = Path.Combine(_proc, pid.ToString());
        Directory.CreateDirectory(Path.Combine(dir, "fd"));
        Directory.CreateDirectory(Path.Combine(dir, "fdinfo"));
        File.WriteAllText(Path.Combine(dir, "cmdline"), string.Join('\0', argv) + "\0");
        File.WriteAllText(Path.Combine(dir, "comm"), Path.GetFileName(argv[0]) + "\n");
        foreach (var (fd, target, lines) in fds)
        {
            File.CreateSymbolicLink(Path.Combine(dir, "fd", fd.ToString()), target);
            File.WriteAllText(Path.Combine(dir, "fdinfo", fd.ToString()),
                "pos:\t0\nflags:\t02100002\nmnt_id:\t27\n" + string.Concat(lines.Select(l => "lock:\t" + l + "\n")));
        }
    }

    [Fact]
    public void Ofd_holder_is_found_through_its_descriptor()
    {
        File.WriteAllText(Path.Combine(_proc, "locks"),
            Line(1, "OFDLCK", "READ", -1, "201-201") + "\n" + Line(2, "OFDLCK", "READ", -1, "100-101") + "\n" +
            "3: OFDLCK ADVISORY  READ -1 fe:00:1 100 100\n");
        Process(1234, ["/usr/bin/qemu-system-x86_64", "-drive", "file=disk.img,if=none", "-name", "my vm"],
            (12, _image, [Line(1, "OFDLCK", "READ", -1, "100-101"), Line(2, "OFDLCK", "READ", -1, "201-201")]),
            (13, "/dev/null", []));
        Process(99, ["/bin/sh"], (0, "/dev/null", []));

        var image = new LockInspector(_proc).Inspect(_image);
        Assert.Null(image.Error);
        Assert.Equal(_id, image.File);
        var holder = Assert.Single(image.Holders);
        Assert.Equal(LockHolderKind.OpenFileDescription, holder.Kind);
        Assert.Equal(new ProcessDescription(1234, "qemu-system-x86_64", "/usr/bin/qemu-system-x86_64 -drive file=disk.img,if=none -name 'my vm'"), holder.Process);
        Assert.Equal(12, holder.Descriptor);
        var verdict = image.Verdict(AccessMode.Write);
        Assert.Equal("Failed to get \"write\" lock", verdict.Error);
        Assert.Same(holder, Assert.Single(verdict.Blockers));
        Assert.Equal(1234, Assert.Single(new LockInspector(_proc).HoldersOf(_image, 201)).Process!.Pid);
        Assert.Empty(new LockInspector(_proc).HoldersOf(_image, 203));
    }

    [Fact]
    public void Locks_of_processes_that_cannot_be_seen_are_reported_unknown()
    {
        File.WriteAllText(Path.Combine(_proc, "locks"), Line(1, "OFDLCK", "READ", -1, "100-101") + "\n");
        Process(5, ["/bin/sleep", "100"], (3, "/dev/null", []));

        var holder = Assert.Single(new LockInspector(_proc).Inspect(_image).Holders);
        Assert.Equal(LockHolderKind.Unknown, holder.Kind);
        Assert.NotNull(holder.UnknownReason);
        Assert.Equal(Vdisk.Permissions.BlockPermission.ConsistentRead | Vdisk.Permissions.BlockPermission.Write, holder.Holds);
    }

    [Fact]
    public void A_lock_released_while_scanning_is_not_reported_as_an_unknown_holder()
    {
        Process(1234, ["qemu-io", "-r", "disk.img"], (12, _image, [Line(1, "OFDLCK", "READ", -1, "100-100")]));
        string held = Line(1, "OFDLCK", "READ", -1, "100-100") + "\n";
        // The first read of /proc/locks still lists a lock whose descriptor was closed before the scan.
        var inspector = new LockInspector(_proc, attempt => File.WriteAllText(Path.Combine(_proc, "locks"),
            attempt == 1 ? held + Line(2, "OFDLCK", "READ", -1, "201-201") + "\n" : held));

        var holder = Assert.Single(inspector.Inspect(_image).Holders);
        Assert.Equal(1234, holder.Process!.Pid);
    }

    [Fact]
    public void A_lock_no_visible_descriptor_holds_is_reported_after_the_last_snapshot()
    {
        File.WriteAllText(Path.Combine(_proc, "locks"), Line(1, "OFDLCK", "READ", -1, "201-201") + "\n");
        Process(5, ["/bin/sleep", "100"], (3, "/dev/null", []));
        int snapshots = 0;

        var holder = Assert.Single(new LockInspector(_proc, n => snapshots = n).Inspect(_image).Holders);
        Assert.Equal(LockHolderKind.Unknown, holder.Kind);
        Assert.Equal(LockInspector.SnapshotAttempts, snapshots);
    }

    [Fact]
    public void Posix_holder_is_named_from_its_pid()
    {
        File.WriteAllText(Path.Combine(_proc, "locks"), Line(1, "POSIX", "WRITE", 77, "0-EOF") + "\n");
        Process(77, ["python3", "-c", "import fcntl"]);

        var holder = Assert.Single(new LockInspector(_proc).Inspect(_image).Holders);
        Assert.Equal(LockHolderKind.Posix, holder.Kind);
        Assert.Equal("python3", holder.Process!.Command);
        Assert.Equal("python3 -c 'import fcntl'", holder.Process.CommandLine);
        Assert.Equal("Failed to lock byte 100", new LockInspector(_proc).Inspect(_image).Verdict(AccessMode.Read).Error);
    }

    [Fact]
    public void File_without_locks_has_no_holders_and_every_mode_is_admitted()
    {
        File.WriteAllText(Path.Combine(_proc, "locks"), "1: OFDLCK ADVISORY  READ -1 fe:00:1 100 101\n");
        var image = new LockInspector(_proc).Inspect(_image);
        Assert.Empty(image.Holders);
        Assert.All(AccessModes.All, m => Assert.True(image.Verdict(m, "qcow2").Admitted));
    }

    [Fact]
    public void Missing_file_is_reported_with_strerror_text()
    {
        File.WriteAllText(Path.Combine(_proc, "locks"), "");
        var missing = Path.Combine(_root, "nope.img");
        var results = new LockInspector(_proc).Inspect([missing, _image]);
        Assert.Equal("No such file or directory", results[0].Error);
        Assert.Equal(2, results[0].Errno);
        Assert.Null(results[1].Error);
    }

    [Fact]
    public void Unreadable_proc_locks_throws()
    {
        Assert.ThrowsAny<IOException>(() => new LockInspector(Path.Combine(_root, "no-proc")).Inspect(_image));
    }
}
