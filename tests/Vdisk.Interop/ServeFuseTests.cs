using System.Text.RegularExpressions;
using Vdisk.Interop.Support;
using Xunit;

namespace Vdisk.Interop;

/// <summary>
/// The FUSE export (<c>--export type=fuse</c>): the same user session through a file mounted by
/// vdisk serve and by qemu-storage-daemon 7.2 gives the same output and leaves the same
/// contents; the export holds the same lock bytes; stopping the daemon unmounts the file.
/// </summary>
public class ServeFuseTests
{
    private static string[] FuseExport(string mountpoint, bool writable = true, bool growable = false) =>
        ["--export", $"type=fuse,id=f0,node-name=disk,mountpoint={Serve.Escape(mountpoint)},writable={(writable ? "on" : "off")},growable={(growable ? "on" : "off")}"];

    /// <summary>Starts a daemon exporting <paramref name="image"/> on a new file <c>mnt</c>; the monitor comes last, so its socket means the mount is there.</summary>
    private static Daemon StartExporting(bool vdisk, TempDir dir, string image, string format, bool writable = true, bool growable = false)
    {
        string mountpoint = dir.File("mnt");
        File.WriteAllBytes(mountpoint, []);
        string qmp = dir.File("m.sock");
        string[] args = [.. Serve.Blockdevs(image, format), .. FuseExport(mountpoint, writable, growable), .. Serve.Monitor(qmp)];
        var daemon = vdisk ? Daemon.Vdisk(args, qmp) : Daemon.Qsd(args, qmp);
        Assert.True(IsMounted(mountpoint), $"{(vdisk ? "vdisk serve" : "qemu-storage-daemon")} did not mount {mountpoint}");
        return daemon;
    }

    /// <summary>Stops the daemon as a user would (SIGTERM); a mount it leaves behind is removed so the directory can go, and reported.</summary>
    private static bool StopAndUnmount(Daemon daemon, string mountpoint)
    {
        daemon.Signal();
        bool left = IsMounted(mountpoint);
        if (left) Programs.Run("umount", "-l", mountpoint);
        return !left;
    }

    /// <summary>
    /// Removes a mount a failing test leaves behind (its daemon killed, not stopped), so that
    /// neither the scratch directory nor a stale FUSE mount outlives the test. Declared before
    /// the daemon, it is disposed after it.
    /// </summary>
    private sealed class MountGuard(string mountpoint) : IDisposable
    {
        public void Dispose()
        {
            if (IsMounted(mountpoint)) Programs.Run("umount", "-l", mountpoint);
        }
    }

    private static bool IsMounted(string path) =>
        File.ReadLines("/proc/self/mountinfo").Any(line => line.Split(' ')[4] == path);

    private static readonly Regex Timing = new(@"(\d+ KiB|[\d.]+ [KMG]?i?B|\d+ bytes)[^\n]*(sec|s, )[^\n]*\n", RegexOptions.Compiled);

    /// <summary>What a user sees running <paramref name="command"/>: exit code and output, timings and the directory masked.</summary>
    private static string Run(TempDir dir, params string[] command)
    {
        var r = Programs.Run(command[0], command[1..]);
        string output = Timing.Replace(r.Stdout + r.Stderr, "<timing>\n");
        return $"$ {string.Join(' ', command)}\n{output}(exit {r.ExitCode})".Replace(dir.Path, "{dir}");
    }

    /// <summary>Everyday use of an exported file: stat, qemu-io and qemu-img through it, dd past the end, truncate, chmod and each fallocate mode.</summary>
    private static List<string> UserSession(TempDir dir, string mountpoint) =>
    [
        Run(dir, "stat", "-c", "%s %a %F", mountpoint),
        Run(dir, "qemu-io", "-f", "raw", "-c", "read -P 0xab 0 64k", "-c", "read -P 0xcd 1M 64k", "-c", "write -P 0x11 2M 4k", mountpoint),
        Run(dir, "qemu-img", "map", "-f", "raw", "--output=json", mountpoint),
        Run(dir, "dd", "if=/dev/zero", $"of={mountpoint}", "bs=4096", "seek=1023", "count=2", "conv=notrunc,fsync"),
        Run(dir, "truncate", "-s", "6M", mountpoint),
        Run(dir, "stat", "-c", "%s", mountpoint),
        Run(dir, "chmod", "0640", mountpoint),
        Run(dir, "stat", "-c", "%a", mountpoint),
        Run(dir, "fallocate", "-p", "-o", "0", "-l", "8192", mountpoint),
        Run(dir, "fallocate", "-z", "-o", "1048576", "-l", "4096", mountpoint),
        Run(dir, "fallocate", "-o", "0", "-l", "4096", mountpoint),
        Run(dir, "fallocate", "-o", "6291456", "-l", "65536", mountpoint),
        Run(dir, "fallocate", "-z", "-n", "-o", "8388608", "-l", "4096", mountpoint),
        Run(dir, "stat", "-c", "%s", mountpoint),
        Run(dir, "qemu-img", "map", "-f", "raw", "--output=json", mountpoint),
        Run(dir, "qemu-io", "-f", "raw", "-c", "read -P 0 0 8k", "-c", "read -P 0 1M 4k", "-c", "read -P 0xcd 1052672 4096", "-c", "read -P 0x11 2M 4k", mountpoint),
    ];

    public static TheoryData<string> Formats => new() { "raw", "qcow2" };

    [Theory]
    [MemberData(nameof(Formats))]
    public void A_user_session_through_the_mounted_file_matches_qemu_storage_daemons(string format)
    {
        (List<string> Session, string Image, TempDir Dir) Through(bool vdisk)
        {
            var dir = new TempDir();
            var image = format == "raw" ? Serve.PatternedRaw(dir) : Serve.PatternedQcow2(dir);
            string mountpoint = dir.File("mnt");
            using var unmount = new MountGuard(mountpoint);
            using var daemon = StartExporting(vdisk, dir, image, format);
            var session = UserSession(dir, mountpoint);
            Assert.True(StopAndUnmount(daemon, mountpoint), "the daemon left its FUSE mount behind");
            return (session, image, dir);
        }
        var (qsdSession, qsdImage, qsdDir) = Through(vdisk: false);
        var (vdiskSession, vdiskImage, vdiskDir) = Through(vdisk: true);
        using (qsdDir)
        using (vdiskDir)
        {
            Assert.Equal(string.Join("\n\n", qsdSession), string.Join("\n\n", vdiskSession));
            // The session's writes and resizes landed in the image as they did under QEMU.
            var compare = Programs.Run("qemu-img", "compare", "-f", format, "-F", format, qsdImage, vdiskImage);
            Assert.Equal("Images are identical.\n", compare.Stdout);
        }
    }

    [Fact]
    public void A_read_only_export_refuses_writes_and_resizes_as_qemu_storage_daemons_does()
    {
        string Session(bool vdisk)
        {
            using var dir = new TempDir();
            var image = Serve.PatternedRaw(dir);
            string mountpoint = dir.File("mnt");
            using var unmount = new MountGuard(mountpoint);
            using var daemon = StartExporting(vdisk, dir, image, "raw", writable: false);
            string session = string.Join("\n\n",
                Run(dir, "stat", "-c", "%s %a", mountpoint),
                Run(dir, "qemu-io", "-r", "-f", "raw", "-c", "read -P 0xab 0 64k", mountpoint),
                Run(dir, "dd", "if=/dev/zero", $"of={mountpoint}", "bs=4096", "count=1", "conv=notrunc"),
                Run(dir, "truncate", "-s", "8M", mountpoint),
                Run(dir, "chmod", "0600", mountpoint));
            Assert.True(StopAndUnmount(daemon, mountpoint), "the daemon left its FUSE mount behind");
            return session;
        }
        string qsd = Session(vdisk: false), vdiskSession = Session(vdisk: true);
        Assert.Equal(qsd, vdiskSession);
        Assert.Contains("Permission denied", vdiskSession, StringComparison.Ordinal);
    }

    [Fact]
    public void A_growable_export_grows_the_image_on_writes_past_the_end()
    {
        string Session(bool vdisk)
        {
            using var dir = new TempDir();
            var image = Serve.PatternedQcow2(dir);
            string mountpoint = dir.File("mnt");
            string session;
            using var unmount = new MountGuard(mountpoint);
            using (var daemon = StartExporting(vdisk, dir, image, "qcow2", growable: true))
            {
                session = string.Join("\n\n",
                    Run(dir, "dd", "if=/dev/zero", $"of={mountpoint}", "bs=65536", "seek=64", "count=2", "conv=notrunc"),
                    Run(dir, "stat", "-c", "%s", mountpoint));
                Assert.True(StopAndUnmount(daemon, mountpoint), "the daemon left its FUSE mount behind");
            }
            return session + "\n\n" + Run(dir, "qemu-img", "info", "-f", "qcow2", "--output=json", image).Split('\n').First(l => l.Contains("virtual-size"));
        }
        string qsd = Session(vdisk: false), vdiskSession = Session(vdisk: true);
        Assert.Equal(qsd, vdiskSession);
        Assert.Contains("\"virtual-size\": 4325376", vdiskSession, StringComparison.Ordinal);
    }

    public static TheoryData<string, bool, bool> LockCases => new()
    {
        { "raw", true, false }, { "raw", false, false }, { "raw", false, true },
        { "qcow2", true, false }, { "qcow2", false, false }, { "qcow2", true, true },
    };

    [Theory]
    [MemberData(nameof(LockCases))]
    public void The_export_holds_the_lock_bytes_of_qemu_storage_daemons(string format, bool writable, bool growable)
    {
        string Held(bool vdisk)
        {
            using var dir = new TempDir();
            var image = format == "raw" ? dir.RawImage() : Serve.PatternedQcow2(dir);
            using var unmount = new MountGuard(dir.File("mnt"));
            using var daemon = StartExporting(vdisk, dir, image, format, writable, growable);
            string held = LockBytesHeld.Describe(LockBytesHeld.Read(daemon.Pid, image));
            Assert.True(StopAndUnmount(daemon, dir.File("mnt")), "the daemon left its FUSE mount behind");
            return held;
        }
        string qsd = Held(vdisk: false);
        Assert.Equal(qsd, Held(vdisk: true));
        // On raw, RESIZE (103) is held whenever the export may write or grow; the export shares everything.
        if (format == "raw") Assert.Equal(string.Join(",", new[] { "100", writable ? "101" : "", writable || growable ? "103" : "" }.Where(b => b != "")), qsd);
    }

    [Fact]
    public void Export_errors_match_qemu_storage_daemons()
    {
        string Transcript(bool vdisk)
        {
            using var dir = new TempDir();
            var image = dir.RawImage();
            string mountpoint = dir.File("mnt");
            File.WriteAllBytes(mountpoint, []);
            Directory.CreateDirectory(dir.File("subdir"));
            string qmp = dir.File("m.sock");
            using var unmount = new MountGuard(mountpoint);
            using var daemon = vdisk
                ? Daemon.Vdisk([.. Serve.Blockdevs(image, "raw"), .. Serve.Monitor(qmp)], qmp)
                : Daemon.Qsd([.. Serve.Blockdevs(image, "raw"), .. Serve.Monitor(qmp)], qmp);
            var lines = new List<string>();
            using (var c = new QmpClient(qmp))
            {
                string Add(string id, string mp) =>
                    $"{{\"execute\":\"block-export-add\",\"arguments\":{{\"type\":\"fuse\",\"id\":\"{id}\",\"node-name\":\"disk\",\"mountpoint\":\"{mp}\"}}}}";
                foreach (var command in new[]
                {
                    "{\"execute\":\"qmp_capabilities\"}",
                    Add("m", dir.File("missing")),
                    Add("d", dir.File("subdir")),
                    Add("f", mountpoint),
                    Add("g", mountpoint),
                    // Stopping the NBD server deletes NBD exports only.
                    $"{{\"execute\":\"nbd-server-start\",\"arguments\":{{\"addr\":{{\"type\":\"unix\",\"data\":{{\"path\":\"{dir.File("n.sock")}\"}}}}}}}}",
                    "{\"execute\":\"nbd-server-stop\"}",
                    "{\"execute\":\"query-block-exports\"}",
                    "{\"execute\":\"block-export-del\",\"arguments\":{\"id\":\"f\"}}",
                    "{\"execute\":\"query-block-exports\"}",
                })
                {
                    lines.Add(c.Execute(command).Replace(dir.Path, "{dir}"));
                    lines.AddRange(c.Events.Select(QmpClient.WithoutTimestamp));
                    c.Events.Clear();
                }
            }
            Assert.True(StopAndUnmount(daemon, mountpoint), "the daemon left its FUSE mount behind");
            return string.Join("\n", lines);
        }
        string qsd = Transcript(vdisk: false), vdiskTranscript = Transcript(vdisk: true);
        Assert.Equal(qsd, vdiskTranscript);
        Assert.Contains("There already is a FUSE export on", vdiskTranscript, StringComparison.Ordinal);
    }

    [Fact]
    public void A_deleted_export_is_unmounted_and_its_locks_released()
    {
        using var dir = new TempDir();
        var image = dir.RawImage();
        string mountpoint = dir.File("mnt");
        using var unmount = new MountGuard(mountpoint);
        using var daemon = StartExporting(vdisk: true, dir, image, "raw");
        Assert.Equal("100,101,103", LockBytesHeld.Describe(LockBytesHeld.Read(daemon.Pid, image)));
        using (var c = new QmpClient(dir.File("m.sock")))
        {
            c.Execute("{\"execute\":\"qmp_capabilities\"}");
            Assert.Contains("\"return\"", c.Execute("{\"execute\":\"block-export-del\",\"arguments\":{\"id\":\"f0\"}}"), StringComparison.Ordinal);
        }
        Assert.False(IsMounted(mountpoint));
        // The node stays open, holding nothing without a user.
        Assert.Equal("", LockBytesHeld.Describe(LockBytesHeld.Read(daemon.Pid, image)));
        Assert.True(StopAndUnmount(daemon, mountpoint));
    }

    [Fact]
    public void A_daemonized_export_on_a_relative_mountpoint_is_unmounted_when_the_daemon_stops()
    {
        // qemu-storage-daemon 7.2 leaves this mount behind: libfuse keeps the relative path, and
        // the daemon has changed to / by the time it unmounts.
        using var dir = new TempDir();
        dir.RawImage();
        string mountpoint = dir.File("mnt"), pidFile = dir.File("pid");
        File.WriteAllBytes(mountpoint, []);
        var start = Programs.Run("sh", "-c",
            $"cd '{dir.Path}' && exec '{Programs.Vdisk}' serve --blockdev file,node-name=disk,filename=disk.raw " +
            $"--export fuse,id=f0,node-name=disk,mountpoint=mnt,writable=on --pidfile '{pidFile}' --daemonize");
        Assert.Equal(0, start.ExitCode);
        try
        {
            Assert.True(IsMounted(mountpoint));
            Programs.Run("kill", "-TERM", File.ReadAllText(pidFile).Trim());
            Poll.Until(() => !File.Exists(pidFile), () => "the daemon did not stop after SIGTERM");
            Assert.False(IsMounted(mountpoint));
        }
        finally
        {
            if (IsMounted(mountpoint)) Programs.Run("umount", "-l", mountpoint);
        }
    }
}
