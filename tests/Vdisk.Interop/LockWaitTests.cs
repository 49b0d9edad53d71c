using Vdisk.Interop.Support;
using Xunit;
using Xunit.Abstractions;

namespace Vdisk.Interop;

/// <summary>
/// <c>--wait</c>: a vdisk opener queues behind a holder that refuses it, is admitted soon after the
/// holder exits, gives up with the usual error when its time runs out, and ends cleanly on SIGTERM.
/// </summary>
public sealed class LockWaitTests(ITestOutputHelper output)
{
    /// <summary>
    /// A vdisk run under strace, so the test can count the lock tests it was refused (a GETLK that
    /// found a conflicting lock) while it waits.
    /// </summary>
    private sealed class TracedWaiter : IDisposable
    {
        private readonly string _log = Path.Combine(Path.GetTempPath(), $"vdisk-wait-{Guid.NewGuid():N}.strace");
        public ChildProcess Process { get; }

        public TracedWaiter(params string[] vdiskArgs) =>
            Process = ChildProcess.Start("strace", ["-f", "-qq", "-e", "trace=fcntl", "-o", _log, Programs.Vdisk, .. vdiskArgs]);

        private int RefusedTests()
        {
            if (!System.IO.File.Exists(_log)) return 0;
            using var reader = new StreamReader(new FileStream(_log, FileMode.Open, FileAccess.Read, FileShare.ReadWrite));
            string text = reader.ReadToEnd();
            return System.Text.RegularExpressions.Regex.Count(text, @"F_OFD_GETLK, \{l_type=F_(RD|WR)LCK");
        }

        /// <summary>Polls the trace until <paramref name="count"/> lock tests were refused; fails if the waiter exits or time runs out.</summary>
        public void WaitForRefusals(int count)
        {
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
            while (RefusedTests() < count)
            {
                if (Process.HasExited) throw new InvalidOperationException($"waiter exited with {Process.Result().ExitCode} after {RefusedTests()} refused lock tests: {Process.Stderr}");
                if (DateTime.UtcNow > deadline) throw new TimeoutException($"only {RefusedTests()} refused lock tests: {Process.Stderr}");
                Process.WaitForExit(TimeSpan.FromMilliseconds(20));
            }
        }

        public void Dispose()
        {
            Process.Dispose();
            System.IO.File.Delete(_log);
        }
    }

    /// <summary>Exactly one line of stderr: the waiting notice naming a holder run as <paramref name="command"/>.</summary>
    private static string OneWaitingNotice(string command) =>
        $"^vdisk: waiting for PID [0-9]+ \\({System.Text.RegularExpressions.Regex.Escape(command)}\\) [^\n]*\n\\z";

    private static Holder PausedVm(string image) => Holder.Start(image, "qemu-system-x86_64",
        "-S", "-nodefaults", "-display", "none", "-machine", "pc",
        "-drive", $"if=none,id=d0,file={image},format=raw", "-device", "virtio-blk-pci,drive=d0");

    private static Holder ProbeRefusingWriters(string image) =>
        Holder.Start(image, Programs.LockProbe, "hold", image, "read,write", "write");

    public static TheoryData<string> RefusingHolders() => new() { "qemu-system virtio-blk", "LockProbe hold read,write write" };

    private static Holder StartRefusingHolder(string kind, string image) =>
        kind.StartsWith("qemu-system", StringComparison.Ordinal) ? PausedVm(image) : ProbeRefusingWriters(image);

    [Theory]
    [MemberData(nameof(RefusingHolders))]
    public void Writer_keeps_waiting_while_refused_and_is_admitted_once_the_holder_exits(string kind)
    {
        using var dir = new TempDir();
        string image = dir.RawImage();
        var holder = StartRefusingHolder(kind, image);
        int holderPid = holder.Pid;
        using var waiter = new TracedWaiter("io", "--wait", "-f", "raw", image, "-c", "write -P 0x5a 0 512");
        try
        {
            waiter.Process.WaitForStderr("waiting for ");
            // It keeps trying while the holder is there: the first refusal and two retries.
            waiter.WaitForRefusals(3);
        }
        finally
        {
            holder.Dispose(); // kills the holder and waits until it is gone, locks and all
        }
        var r = waiter.Process.Result();
        output.WriteLine($"{kind}: {r}");

        Assert.Equal(0, r.ExitCode);
        Assert.Contains("wrote 512/512 bytes at offset 0", r.Stdout);
        // One notice, naming the holder by PID and command.
        string command = kind.StartsWith("qemu-system", StringComparison.Ordinal) ? "qemu-system-x86_64" : "LockProbe";
        Assert.Matches($"^vdisk: waiting for PID {holderPid} \\({command}\\) fd [0-9]+, which refuses to share \"write\" on '{System.Text.RegularExpressions.Regex.Escape(image)}' \\(Failed to get \"write\" lock\\)\n\\z", r.Stderr);
        Assert.Equal("ok", Outcome.Of(Programs.Run("qemu-io", "-r", "-f", "raw", image, "-c", "read -P 0x5a 0 512")));
    }

    [Fact]
    public void Wait_gives_up_with_the_same_error_as_without_wait()
    {
        using var dir = new TempDir();
        string image = dir.RawImage();
        using var holder = ProbeRefusingWriters(image);

        var plain = Programs.Run(Programs.Vdisk, "io", "-f", "raw", image, "-c", "read 0 512");
        var waited = Programs.Run(Programs.Vdisk, "io", "--wait=1", "-f", "raw", image, "-c", "read 0 512");
        output.WriteLine(plain.Stderr + waited.Stderr);

        Assert.Equal(1, plain.ExitCode);
        Assert.Equal(plain.ExitCode, waited.ExitCode);
        Assert.Equal($"vdisk: can't open device {image}: Failed to get \"write\" lock\nIs another process using the image [{image}]?\n", plain.Stderr);
        var lines = waited.Stderr.Split('\n', 2);
        Assert.StartsWith($"vdisk: waiting for PID {holder.Pid} (LockProbe)", lines[0]);
        Assert.Equal(plain.Stderr, lines[1]);
        Assert.Equal(plain.Stdout, waited.Stdout);
    }

    [Fact]
    public void Without_wait_an_open_fails_at_once_and_says_nothing_about_waiting()
    {
        using var dir = new TempDir();
        string image = dir.RawImage();
        using var holder = PausedVm(image);
        var r = Programs.Run(Programs.Vdisk, "io", "-f", "raw", image, "-c", "read 0 512");
        Assert.Equal("Failed to get \"write\" lock +hint", Outcome.Of(r));
        Assert.DoesNotContain("waiting", r.Stderr);
    }

    [Fact]
    public void Sigterm_ends_an_endless_wait_cleanly()
    {
        using var dir = new TempDir();
        string image = dir.RawImage();
        using var holder = ProbeRefusingWriters(image);
        // A bare --wait right before the image name must not swallow it.
        using var waiter = ChildProcess.Start(Programs.Vdisk, ["io", "-f", "raw", "--wait", image, "-c", "write 0 512"]);
        waiter.WaitForStderr("waiting for ");
        var kill = Programs.Run("kill", "-TERM", waiter.Pid.ToString(System.Globalization.CultureInfo.InvariantCulture));
        Assert.Equal(0, kill.ExitCode);
        var r = waiter.Result();
        Assert.Equal(128 + 15, r.ExitCode);
        Assert.Matches(OneWaitingNotice("LockProbe"), r.Stderr);
        Assert.Equal("", r.Stdout);
        // The holder is untouched: writers are still refused.
        Assert.Equal("Failed to get \"write\" lock +hint", Outcome.Of(Programs.Run("qemu-io", "-f", "raw", image, "-c", "read 0 512")));
    }

    [Fact]
    public void Info_accepts_wait_and_is_admitted_past_a_writer_on_raw()
    {
        // qemu-img info on raw takes no lock bytes, so a VM that refuses writers does not stop it.
        using var dir = new TempDir();
        string image = dir.RawImage();
        using var holder = PausedVm(image);
        var r = Programs.Run(Programs.Vdisk, "info", "--wait=5", "-f", "raw", image);
        Assert.Equal(0, r.ExitCode);
        Assert.Equal("", r.Stderr);
        Assert.Contains("file format: raw", r.Stdout);
    }

    [Fact]
    public void Wait_value_must_be_seconds()
    {
        using var dir = new TempDir();
        var r = Programs.Run(Programs.Vdisk, "io", "--wait=soon", "-f", "raw", dir.RawImage(), "-c", "read 0 512");
        Assert.Equal(1, r.ExitCode);
        Assert.Equal("vdisk: --wait: invalid number of seconds 'soon'\n", r.Stderr);
    }

    /// <summary>The qemu-img verbs wait too: each is queued behind a qcow2 writer, then runs.</summary>
    [Theory]
    [InlineData("check")]
    [InlineData("info")]
    [InlineData("resize")]
    [InlineData("convert")]
    [InlineData("create")]
    [InlineData("commit")]
    public void QemuImgVerbs_wait_behind_a_qcow2_writer(string verb)
    {
        using var dir = new TempDir();
        string baseImage = dir.File("base.qcow2");
        string image = dir.File("top.qcow2");
        Assert.Equal(0, Programs.Run("qemu-img", "create", "-q", "-f", "qcow2", baseImage, "1M").ExitCode);
        Assert.Equal(0, Programs.Run("qemu-img", "create", "-q", "-f", "qcow2", "-b", baseImage, "-F", "qcow2", image).ExitCode);
        // commit writes into the base: hold the base; every other verb: hold the image itself.
        string held = verb == "commit" ? baseImage : image;
        var holder = Holder.Start(held, "qemu-io", "-f", "qcow2", held, "-c", "sleep 60000");
        string[] args = verb switch
        {
            "check" => ["check", "--wait=30", image],
            "info" => ["info", "--wait=30", image],
            "resize" => ["resize", "--wait=30", "-q", image, "+1M"],
            "convert" => ["convert", "--wait=30", "-O", "raw", image, dir.File("out.raw")],
            "create" => ["create", "--wait=30", "-q", "-f", "qcow2", image, "2M"],
            _ => ["commit", "--wait=30", "-q", "-d", image],
        };
        using var waiter = ChildProcess.Start(Programs.Vdisk, args);
        try
        {
            waiter.WaitForStderr("waiting for ");
        }
        finally
        {
            holder.Dispose();
        }
        var r = waiter.Result();
        Assert.Equal(0, r.ExitCode);
        Assert.Matches(OneWaitingNotice("qemu-io"), r.Stderr);
        Assert.Equal(0, Programs.Run("qemu-img", "check", "-q", image).ExitCode);
    }

    [Fact]
    public void Serve_blockdev_waits_behind_a_qcow2_writer_then_holds_the_image()
    {
        using var dir = new TempDir();
        string image = dir.File("disk.qcow2");
        string pidfile = dir.File("serve.pid");
        Assert.Equal(0, Programs.Run("qemu-img", "create", "-q", "-f", "qcow2", image, "1M").ExitCode);
        var holder = Holder.Start(image, "qemu-io", "-f", "qcow2", image, "-c", "sleep 60000");
        using var daemon = ChildProcess.Start(Programs.Vdisk, ["serve", "--wait=30",
            "--blockdev", $"driver=qcow2,node-name=disk,file.driver=file,file.filename={image}", "--pidfile", pidfile]);
        try
        {
            daemon.WaitForStderr("waiting for ");
            Assert.False(System.IO.File.Exists(pidfile));
        }
        finally
        {
            holder.Dispose();
        }
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (!System.IO.File.Exists(pidfile))
        {
            Assert.False(daemon.HasExited, daemon.Stderr);
            Assert.True(DateTime.UtcNow < deadline, "serve never became ready: " + daemon.Stderr);
            daemon.WaitForExit(TimeSpan.FromMilliseconds(10)); // a pause that ends early if serve exits
        }
        // The daemon now holds the image as a writable qcow2 node: QEMU writers are refused.
        Assert.Equal("Failed to get \"write\" lock +hint", Outcome.Of(Programs.Run("qemu-io", "-f", "qcow2", image, "-c", "write 0 512")));
        Assert.Equal(0, Programs.Run("kill", "-TERM", daemon.Pid.ToString(System.Globalization.CultureInfo.InvariantCulture)).ExitCode);
        var r = daemon.Result();
        Assert.Equal(0, r.ExitCode);
        Assert.Matches(OneWaitingNotice("qemu-io"), r.Stderr);
    }

    /// <summary>
    /// A client that connects while serve is still applying its command line (here: waiting for
    /// the lock of the --blockdev before the --export) waits until the export exists, as with
    /// QEMU, whose accept handler first runs after every option; it is not told "no such export".
    /// </summary>
    [Fact]
    public void Serve_a_client_that_connects_during_start_up_waits_for_the_export()
    {
        using var dir = new TempDir();
        string image = dir.File("disk.qcow2"), socket = dir.File("nbd.sock");
        Assert.Equal(0, Programs.Run("qemu-img", "create", "-q", "-f", "qcow2", image, "1M").ExitCode);
        var holder = Holder.Start(image, "qemu-io", "-f", "qcow2", image, "-c", "sleep 60000");
        using var daemon = ChildProcess.Start(Programs.Vdisk, ["serve", "--wait=30", "--nbd-server", $"addr.type=unix,addr.path={socket}",
            "--blockdev", $"driver=qcow2,node-name=disk,file.driver=file,file.filename={image}", "--export", "type=nbd,id=e0,node-name=disk"]);
        ChildProcess client;
        try
        {
            daemon.WaitForStderr("waiting for ");
            client = ChildProcess.Start("nbdinfo", [$"nbd+unix:///disk?socket={socket}"]);
            // The client has connected and waits for the greeting (or, wrongly, has already been answered).
            ProcessState.WaitUntilExitedOrBlocked(client);
        }
        finally
        {
            holder.Dispose();
        }
        using (client)
        {
            var info = client.Result();
            Assert.True(info.ExitCode == 0, info.ToString());
            Assert.Contains("export=\"disk\":", info.Stdout);
        }
        Assert.Equal(0, Programs.Run("kill", "-TERM", daemon.Pid.ToString(System.Globalization.CultureInfo.InvariantCulture)).ExitCode);
        Assert.Equal(0, daemon.Result().ExitCode);
    }
}
