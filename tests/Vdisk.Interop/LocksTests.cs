using System.Text.Json;
using Vdisk.Inspection;
using Vdisk.Interop.Support;
using Xunit;
using Xunit.Abstractions;

namespace Vdisk.Interop;

/// <summary>
/// <c>vdisk locks</c> against holders started by real QEMU programs and by vdisk: it must name
/// each holder's PID and command, decode the right permissions, and its verdict for every mode
/// must agree with what the real QEMU tool does when that mode is tried.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class LocksTests(ITestOutputHelper output)
{
    /// <summary>A kind of holder: how to start it, and what it must be decoded as.</summary>
    public sealed record HolderCase(string Name, string ImageFormat, string Command, string[] Holds, string[] Refuses,
        Func<string, string, string[]> Args, string Program, Func<IReadOnlySet<int>, bool>? Ready = null)
    {
        public override string ToString() => Name;
    }

    private static readonly HolderCase[] Cases =
    [
        new("qemu-io rw qcow2", "qcow2", "qemu-io", ["consistent-read", "write", "resize"], ["write", "resize"],
            (img, _) => ["-f", "qcow2", img, "-c", "sleep 600000"], "qemu-io"),
        new("qemu-io -r qcow2", "qcow2", "qemu-io", ["consistent-read"], ["write", "resize"],
            (img, _) => ["-r", "-f", "qcow2", img, "-c", "sleep 600000"], "qemu-io"),
        new("qemu-io -r -U qcow2", "qcow2", "qemu-io", ["consistent-read"], [],
            (img, _) => ["-r", "-U", "-f", "qcow2", img, "-c", "sleep 600000"], "qemu-io"),
        new("qemu-io rw raw", "raw", "qemu-io", ["consistent-read", "write"], [],
            (img, _) => ["-f", "raw", img, "-c", "sleep 600000"], "qemu-io"),
        new("qemu-nbd raw", "raw", "qemu-nbd", ["consistent-read", "write"], ["resize"],
            (img, dir) => ["-f", "raw", $"--socket={Path.Combine(dir, "nbd.sock")}", img], "qemu-nbd"),
        new("qemu-nbd qcow2", "qcow2", "qemu-nbd", ["consistent-read", "write", "resize"], ["write", "resize"],
            (img, dir) => ["-f", "qcow2", $"--socket={Path.Combine(dir, "nbd.sock")}", img], "qemu-nbd"),
        new("qemu-system virtio-blk raw", "raw", "qemu-system-x86_64", ["consistent-read", "write"], ["write"],
            (img, _) => ["-S", "-nodefaults", "-display", "none", "-machine", "pc", "-drive", $"if=none,id=d0,file={img},format=raw", "-device", "virtio-blk-pci,drive=d0"],
            "qemu-system-x86_64", VmHoldsDisk),
        new("vdisk io rw raw", "raw", "vdisk", ["consistent-read", "write"], [],
            (img, _) => ["io", "-f", "raw", img, "-c", "sleep 600000"], "vdisk"),
        new("LockProbe hold read,write refusing write", "raw", "LockProbe", ["consistent-read", "write"], ["write"],
            (img, _) => ["hold", img, "read,write", "write"], "LockProbe"),
    ];

    public static TheoryData<HolderCase> HolderCases()
    {
        var data = new TheoryData<HolderCase>();
        foreach (var c in Cases) data.Add(c);
        return data;
    }

    private static string ProgramPath(string program) => program switch
    {
        "vdisk" => Programs.Vdisk,
        "LockProbe" => Programs.LockProbe,
        _ => program,
    };

    private static string Image(TempDir dir, string format)
    {
        string path = dir.File(format == "qcow2" ? "disk.qcow2" : "disk.img");
        var r = Programs.Run("qemu-img", "create", "-q", "-f", format, path, "1M");
        if (r.ExitCode != 0) throw new InvalidOperationException(r.ToString());
        return path;
    }

    [Theory]
    [MemberData(nameof(HolderCases))]
    public void Holder_is_named_and_decoded_and_verdicts_match_real_qemu(HolderCase c)
    {
        using var dir = new TempDir();
        string image = Image(dir, c.ImageFormat);
        // A VM opens its disk read-only and takes the write bytes only when the device attaches.
        using var holder = Holder.Start(image, ProgramPath(c.Program), c.Args(image, dir.Path), c.Ready ?? (_ => true));

        var (run, json) = LocksCli.Json(image, c.ImageFormat);
        output.WriteLine(run.Stdout);
        var h = Assert.Single(json.GetProperty("holders").EnumerateArray());
        Assert.Equal("ofd", h.GetProperty("kind").GetString());
        Assert.Equal(holder.Pid, h.GetProperty("pid").GetInt32());
        Assert.Contains(h.GetProperty("fd").GetInt32(), Holder.ImageDescriptors(holder.Pid, image));
        Assert.Equal(c.Command, h.GetProperty("command").GetString());
        Assert.Contains(Path.GetFileName(image), h.GetProperty("command-line").GetString());
        Assert.Equal(c.Holds, LocksCli.Names(h.GetProperty("holds")));
        Assert.Equal(c.Refuses, LocksCli.Names(h.GetProperty("refuses")));

        // The verdicts for the image's own format, and for raw access to a qcow2 file (qemu-io -f raw works on any file).
        var formats = c.ImageFormat == "qcow2" ? new[] { "qcow2", "raw" } : ["raw"];
        foreach (var format in formats)
        {
            var (_, judged) = format == c.ImageFormat ? (run, json) : LocksCli.Json(image, format);
            foreach (var mode in AccessModes.All)
            {
                var verdict = LocksCli.Verdict(judged, mode);
                var real = LocksCli.TryWithQemu(mode, format, image);
                string predicted = verdict.GetProperty("admitted").GetBoolean() ? "ok" : verdict.GetProperty("error").GetString()!;
                output.WriteLine($"{format} {AccessModes.Name(mode)}: vdisk says {predicted}; {AccessModes.Tool(mode)} -> exit {real.ExitCode} {real.Stderr.Trim()}");
                if (predicted == "ok")
                {
                    Assert.True(real.ExitCode == 0, $"{format} {AccessModes.Name(mode)} predicted ok, but: {real}");
                }
                else
                {
                    Assert.NotEqual(0, real.ExitCode);
                    Assert.Contains(predicted, real.Stderr);
                    Assert.Equal(holder.Pid, verdict.GetProperty("blockers")[0].GetProperty("pid").GetInt32());
                }
            }
        }
    }

    /// <summary>A VM's virtio-blk disk is attached: write held (byte 101) and refused to others (byte 201).</summary>
    private static bool VmHoldsDisk(IReadOnlySet<int> bytes) => bytes.Contains(101) && bytes.Contains(201);

    [Fact]
    public void Human_table_shows_pid_command_and_decoded_permissions()
    {
        using var dir = new TempDir();
        string image = Image(dir, "qcow2");
        using var holder = Holder.Start(image, "qemu-io", "-f", "qcow2", image, "-c", "sleep 600000");
        var r = Programs.Run(Programs.Vdisk, "locks", "-f", "qcow2", image);
        output.WriteLine(r.Stdout);
        Assert.Equal(0, r.ExitCode);
        var row = r.Stdout.Split('\n').Single(l => l.TrimStart().StartsWith(holder.Pid.ToString() + " "));
        Assert.Contains("OFD", row);
        Assert.Contains("100-101,103,201,203", row);
        Assert.Contains("consistent read, write, resize", row);
        Assert.Contains("qemu-io -f qcow2", row);
        Assert.Contains($"write (qemu-io -f qcow2): blocked: Failed to get \"write\" lock. PID {holder.Pid} (qemu-io)", r.Stdout);
        Assert.Contains($"read (qemu-io -r -f qcow2): blocked: Failed to get shared \"write\" lock. PID {holder.Pid} (qemu-io)", r.Stdout);
        Assert.Contains("force-share (qemu-io -r -U -f qcow2): admitted", r.Stdout);
    }

    /// <summary>
    /// Without -f the verdict assumes what QEMU's tool would find: qemu-io -r on a qcow2 held by a
    /// qcow2 writer probes qcow2, refuses to share write, and is refused; so is "locks --for read".
    /// </summary>
    [Fact]
    public void Without_format_the_image_is_probed_as_qemu_probes_it()
    {
        using var dir = new TempDir();
        string image = Image(dir, "qcow2");
        using var holder = Holder.Start(image, "qemu-io", "-f", "qcow2", image, "-c", "sleep 600000");
        var qemu = Programs.Run("qemu-io", "-r", image, "-c", "read 0 512");
        Assert.Equal(1, qemu.ExitCode);

        var r = Programs.Run(Programs.Vdisk, "locks", "--for", "read", image);
        output.WriteLine(r.Stdout);
        Assert.Equal(1, r.ExitCode);
        const string error = "Failed to get shared \"write\" lock";
        Assert.Contains(error, qemu.Stderr);
        Assert.Contains($"read (qemu-io -r -f qcow2): blocked: {error}. PID {holder.Pid} (qemu-io)", r.Stdout);

        var json = JsonDocument.Parse(Programs.Run(Programs.Vdisk, "locks", "--output", "json", "--for", "read", image).Stdout).RootElement;
        Assert.Equal(JsonValueKind.Null, json.GetProperty("format").ValueKind);
        var judged = json.GetProperty("images")[0];
        Assert.Equal("qcow2", judged.GetProperty("format").GetString());
        Assert.False(LocksCli.Verdict(judged, AccessMode.Read).GetProperty("admitted").GetBoolean());

        // -f still decides when given: raw access to the same file (qemu-io -r -f raw) gets in.
        Assert.Equal(0, Programs.Run("qemu-io", "-r", "-f", "raw", image, "-c", "read 0 512").ExitCode);
        Assert.Equal(0, Programs.Run(Programs.Vdisk, "locks", "-f", "raw", "--for", "read", image).ExitCode);
    }

    [Fact]
    public void Without_format_a_raw_image_is_judged_raw()
    {
        using var dir = new TempDir();
        string image = Image(dir, "raw");
        using var holder = Holder.Start(image, "qemu-io", "-f", "raw", image, "-c", "sleep 600000");
        Assert.Equal(0, Programs.Run("qemu-io", "-r", "-f", "raw", image, "-c", "read 0 512").ExitCode);
        Assert.Equal(0, Programs.Run(Programs.Vdisk, "locks", "--for", "read", image).ExitCode);
        var json = JsonDocument.Parse(Programs.Run(Programs.Vdisk, "locks", "--output", "json", image).Stdout).RootElement;
        Assert.Equal("raw", json.GetProperty("images")[0].GetProperty("format").GetString());
    }

    [Fact]
    public void Exit_status_follows_the_asked_mode()
    {
        using var dir = new TempDir();
        string image = Image(dir, "raw");
        using var holder = Holder.Start(image, "qemu-system-x86_64", Cases.Single(c => c.Program == "qemu-system-x86_64").Args(image, dir.Path), VmHoldsDisk);
        Assert.Equal(1, Programs.Run(Programs.Vdisk, "locks", "--for", "write", image).ExitCode);
        Assert.Equal(0, Programs.Run(Programs.Vdisk, "locks", "--for", "read", image).ExitCode);
        Assert.Equal(0, Programs.Run(Programs.Vdisk, "locks", "--for", "force-share", image).ExitCode);
        Assert.Equal(1, Programs.Run(Programs.Vdisk, "locks", "--for", "resize", image).ExitCode);
        var (_, json) = LocksCli.Json(image, "raw", "--for", "write");
        Assert.Equal(["write"], json.GetProperty("verdicts").EnumerateArray().Select(v => v.GetProperty("mode").GetString()));
    }

    [Fact]
    public void Two_holders_in_one_image_are_both_listed()
    {
        using var dir = new TempDir();
        string image = Image(dir, "qcow2");
        using var reader1 = Holder.Start(image, "qemu-io", "-r", "-f", "qcow2", image, "-c", "sleep 600000");
        using var reader2 = Holder.Start(image, "qemu-io", "-r", "-U", "-f", "qcow2", image, "-c", "sleep 600000");
        var (_, json) = LocksCli.Json(image, "qcow2");
        // The holders as "pid:locks", so that an unexpected one (no pid) shows what it held.
        var holders = json.GetProperty("holders").EnumerateArray()
            .Select(h => $"{h.GetProperty("pid")}:{h.GetProperty("locks")}").Order().ToList();
        var expected = new[] { reader1.Pid, reader2.Pid }.Order().Select(p => p.ToString());
        Assert.True(holders.Select(h => h.Split(':')[0]).SequenceEqual(expected), $"expected holders {string.Join(", ", expected)}, got {string.Join(" ", holders)}");
        var write = LocksCli.Verdict(json, AccessMode.Write);
        Assert.Equal("Failed to get \"write\" lock", write.GetProperty("error").GetString());
        Assert.Equal(reader1.Pid, Assert.Single(write.GetProperty("blockers").EnumerateArray()).GetProperty("pid").GetInt32());
    }

    [Fact]
    public void Flock_by_another_program_is_shown_as_flock_and_blocks_nothing()
    {
        using var dir = new TempDir();
        string image = Image(dir, "raw");
        using var holder = Holder.Start(image, "flock", image, "sleep", "600");
        var (_, json) = LocksCli.Json(image);
        var h = Assert.Single(json.GetProperty("holders").EnumerateArray());
        Assert.Equal("flock", h.GetProperty("kind").GetString());
        Assert.Equal(holder.Pid, h.GetProperty("pid").GetInt32());
        Assert.Equal("flock", h.GetProperty("command").GetString());
        Assert.Equal("write", h.GetProperty("locks")[0].GetProperty("mode").GetString());
        Assert.Contains(h.GetProperty("shared-with").EnumerateArray(), s => s.GetProperty("command").GetString() == "sleep");
        Assert.Empty(h.GetProperty("holds").EnumerateArray());
        Assert.True(LocksCli.Verdict(json, AccessMode.Write).GetProperty("admitted").GetBoolean());
        Assert.Equal(0, LocksCli.TryWithQemu(AccessMode.Write, "raw", image).ExitCode);
    }

    private const string PosixHolderScript =
        "import fcntl, sys, time\n" +
        "f = open(sys.argv[1], 'r+')\n" +
        "fcntl.lockf(f, fcntl.LOCK_EX if sys.argv[2] == 'write' else fcntl.LOCK_SH, int(sys.argv[4]), int(sys.argv[3]))\n" +
        "print('held', flush=True)\n" +
        "time.sleep(600)\n";

    [Fact]
    public void Posix_read_lock_on_byte_201_is_shown_as_refusing_write()
    {
        using var dir = new TempDir();
        string image = Image(dir, "raw");
        using var holder = Holder.Start(image, "python3", "-c", PosixHolderScript, image, "read", "201", "1");
        var (_, json) = LocksCli.Json(image);
        var h = Assert.Single(json.GetProperty("holders").EnumerateArray());
        Assert.Equal("posix", h.GetProperty("kind").GetString());
        Assert.Equal(holder.Pid, h.GetProperty("pid").GetInt32());
        Assert.StartsWith("python", h.GetProperty("command").GetString());
        Assert.Equal(["write"], LocksCli.Names(h.GetProperty("refuses")));
        foreach (var mode in new[] { AccessMode.Write, AccessMode.Read })
        {
            var verdict = LocksCli.Verdict(json, mode);
            var real = LocksCli.TryWithQemu(mode, "raw", image);
            if (verdict.GetProperty("admitted").GetBoolean()) Assert.Equal(0, real.ExitCode);
            else Assert.Contains(verdict.GetProperty("error").GetString()!, real.Stderr);
        }
        Assert.Equal("Failed to get \"write\" lock", LocksCli.Verdict(json, AccessMode.Write).GetProperty("error").GetString());
    }

    [Fact]
    public void Exclusive_posix_lock_over_the_file_predicts_failed_to_lock_byte()
    {
        using var dir = new TempDir();
        string image = Image(dir, "raw");
        using var holder = Holder.Start(image, "python3", "-c", PosixHolderScript, image, "write", "0", "0");
        var (_, json) = LocksCli.Json(image);
        var h = Assert.Single(json.GetProperty("holders").EnumerateArray());
        Assert.Equal(("posix", "write", JsonValueKind.Null), (h.GetProperty("kind").GetString(), h.GetProperty("locks")[0].GetProperty("mode").GetString(),
            h.GetProperty("locks")[0].GetProperty("end").ValueKind));
        Assert.True(h.GetProperty("other-locks").GetBoolean());
        var write = LocksCli.Verdict(json, AccessMode.Write);
        Assert.Equal("Failed to lock byte 100", write.GetProperty("error").GetString());
        Assert.Contains("Failed to lock byte 100", LocksCli.TryWithQemu(AccessMode.Write, "raw", image).Stderr);
        // qemu-img info on raw takes no lock at all, so even an exclusive lock does not stop it.
        Assert.True(LocksCli.Verdict(json, AccessMode.Info).GetProperty("admitted").GetBoolean());
        Assert.Equal(0, LocksCli.TryWithQemu(AccessMode.Info, "raw", image).ExitCode);
    }

    [Fact]
    public void Directory_scan_lists_only_held_images_and_recurses_with_r()
    {
        using var dir = new TempDir();
        Directory.CreateDirectory(dir.File("sub"));
        string free = dir.RawImage("free.img");
        string held = dir.RawImage(Path.Combine("sub", "held.img"));
        using var holder = Holder.Start(held, "qemu-io", "-f", "raw", held, "-c", "sleep 600000");

        var flat = Programs.Run(Programs.Vdisk, "locks", dir.Path);
        Assert.Equal(0, flat.ExitCode);
        Assert.DoesNotContain("held.img", flat.Stdout);
        Assert.Contains("1 file(s) examined: 0 with locks, 1 without", flat.Stdout);

        var deep = Programs.Run(Programs.Vdisk, "locks", "-r", dir.Path);
        output.WriteLine(deep.Stdout);
        Assert.Contains($"{held}: 1 holder(s)", deep.Stdout);
        Assert.DoesNotContain(free, deep.Stdout);
        Assert.Contains("2 file(s) examined: 1 with locks, 1 without", deep.Stdout);

        var json = JsonDocument.Parse(Programs.Run(Programs.Vdisk, "locks", "-r", "--output", "json", dir.Path).Stdout).RootElement;
        Assert.Equal(2, json.GetProperty("images").GetArrayLength());
    }

    [Fact]
    public void Missing_path_is_one_error_line_and_exit_2()
    {
        using var dir = new TempDir();
        string missing = dir.File("missing.img");
        string present = dir.RawImage();
        var r = Programs.Run(Programs.Vdisk, "locks", present, missing);
        Assert.Equal(2, r.ExitCode);
        Assert.Equal($"vdisk: {missing}: No such file or directory\n", r.Stderr);
        Assert.Contains($"{present}: no locks", r.Stdout);
    }

    [Fact]
    public void No_path_is_a_usage_error_with_exit_2()
    {
        var r = Programs.Run(Programs.Vdisk, "locks");
        Assert.Equal(2, r.ExitCode);
        Assert.StartsWith("vdisk: ", r.Stderr);
        Assert.Single(r.Stderr.TrimEnd('\n').Split('\n'));
    }

    [Fact]
    public void Bad_mode_is_a_usage_error_with_exit_2()
    {
        using var dir = new TempDir();
        var r = Programs.Run(Programs.Vdisk, "locks", "--for", "exclusive", dir.RawImage());
        Assert.Equal(2, r.ExitCode);
        Assert.StartsWith("vdisk: ", r.Stderr);
        Assert.DoesNotContain("   at ", r.Stderr);
    }

    private static bool IsRoot => Environment.UserName == "root";

    /// <summary>Runs vdisk as nobody when we are root (root may read everything); otherwise as ourselves.</summary>
    private static RunResult RunUnprivileged(params string[] args) => IsRoot
        ? Programs.Run("setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", Programs.Vdisk, .. args], null)
        : Programs.Run(Programs.Vdisk, args);

    [Fact]
    public void Unreadable_paths_are_one_error_line_each_and_exit_2()
    {
        using var dir = new TempDir();
        File.SetUnixFileMode(dir.Path, (UnixFileMode)0b111_101_101);
        string closed = dir.File("closed");
        Directory.CreateDirectory(closed);
        string inside = Path.Combine(closed, "disk.img");
        File.WriteAllBytes(inside, new byte[512]);
        File.SetUnixFileMode(closed, UnixFileMode.None);
        try
        {
            var file = RunUnprivileged("locks", inside);
            Assert.Equal(2, file.ExitCode);
            Assert.Equal($"vdisk: {inside}: Permission denied\n", file.Stderr);

            var walk = RunUnprivileged("locks", "-r", dir.Path);
            Assert.Equal(2, walk.ExitCode);
            Assert.Equal($"vdisk: {closed}: Permission denied\n", walk.Stderr);
        }
        finally
        {
            File.SetUnixFileMode(closed, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        }
    }

    [Fact]
    public void Holder_of_another_user_is_reported_unknown_not_hidden()
    {
        // The holder must belong to a user whose processes the inspector cannot read: that takes
        // root (the holder runs as root, vdisk as nobody). The suite runs as root; anywhere else
        // this fails rather than pass without testing anything.
        Assert.True(IsRoot, "needs root, to run the holder and vdisk as two different users");
        using var dir = new TempDir();
        File.SetUnixFileMode(dir.Path, (UnixFileMode)0b111_101_101);
        string image = Image(dir, "raw");
        using var holder = Holder.Start(image, "qemu-system-x86_64", Cases.Single(c => c.Program == "qemu-system-x86_64").Args(image, dir.Path), VmHoldsDisk);
        var r = RunUnprivileged("locks", "--output", "json", "--for", "write", image);
        Assert.Equal(1, r.ExitCode);
        var json = JsonDocument.Parse(r.Stdout).RootElement.GetProperty("images")[0];
        var h = Assert.Single(json.GetProperty("holders").EnumerateArray());
        Assert.Equal("unknown", h.GetProperty("kind").GetString());
        Assert.Equal(JsonValueKind.Null, h.GetProperty("pid").ValueKind);
        Assert.Equal(["write"], LocksCli.Names(h.GetProperty("refuses")));
        Assert.True(json.GetProperty("unreadable-processes").GetInt32() > 0);
        Assert.Equal("Failed to get \"write\" lock", LocksCli.Verdict(json, AccessMode.Write).GetProperty("error").GetString());
    }
}
