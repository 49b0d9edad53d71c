using System.Diagnostics;
using System.Text.RegularExpressions;
using Vdisk.Interop.Support;
using Xunit;

namespace Vdisk.Interop.Qcow2;

/// <summary>
/// -p as scripts see it: into a pipe, stdout carries qemu-img's <c>"    (xx.xx/100%)\r"</c>
/// lines and a final newline, byte for byte where the work is deterministic; on a terminal a
/// bar stays on screen at 100%; without -p, SIGUSR1 asks for one report on stderr.
/// </summary>
public class ProgressCompatTests
{
    private static readonly Regex Line = new(@"^(    \((\d+\.\d\d)/100%\)\r)+\n", RegexOptions.Compiled);

    private static void Img(string dir, params string[] args) => Qemu.Ok(SideBySide.RunIn(dir, "qemu-img", args));

    private static void Io(string dir, string image, params string[] commands) =>
        Qemu.Ok(SideBySide.RunIn(dir, "qemu-io", [.. Qemu.Commands(commands), image]));

    private static void Prepare(string dir)
    {
        Img(dir, "create", "-q", "-f", "qcow2", "full.qcow2", "64M");
        Io(dir, "full.qcow2", "write -P 1 0 64M");
        Img(dir, "create", "-q", "-f", "qcow2", "sparse.qcow2", "64M");
        Io(dir, "sparse.qcow2", "write -P 1 0 6M", "write -P 2 16M 2M", "write -z 20M 4M", "write -P 3 40M 8M");
        Img(dir, "create", "-q", "-f", "raw", "sparse.raw", "32M");
        Io(dir, "sparse.raw", "write -P 1 2M 6M", "write -P 2 20M 4M");
        Img(dir, "create", "-q", "-f", "qcow2", "b.qcow2", "64M");
        Img(dir, "create", "-q", "-f", "raw", "target.raw", "64M");
    }

    [Theory]
    [InlineData("-p full.qcow2 o.img")]
    [InlineData("-p -O qcow2 full.qcow2 o.img")]
    [InlineData("-p sparse.qcow2 o.img")]
    [InlineData("-p -S 0 sparse.qcow2 o.img")]
    [InlineData("-p -c -O qcow2 sparse.qcow2 o.img")]
    [InlineData("-p -O qcow2 sparse.raw o.img")]
    [InlineData("-p sparse.raw sparse.qcow2 o.img")]
    [InlineData("-p -B b.qcow2 -F qcow2 -O qcow2 sparse.qcow2 o.img")]
    [InlineData("-p -n -f qcow2 sparse.qcow2 target.raw")]
    [InlineData("-p -m 1 full.qcow2 o.img")]
    [InlineData("-p -q full.qcow2 o.img")]
    [InlineData("-p nonexist o.img")]
    [InlineData("-p -O bogus full.qcow2 o.img")]
    [InlineData("-p -T bogus full.qcow2 o.img")]
    [InlineData("-p -t bogus full.qcow2 o.img")]
    public void Convert_prints_qemu_imgs_lines_into_a_pipe(string args)
    {
        using var sides = new SideBySide(Prepare);
        sides.Same(["convert", .. args.Split(' ')]);
    }

    [Theory]
    [InlineData("rebase -p -b '' top.qcow2")]
    [InlineData("rebase -p -b other.qcow2 -F qcow2 top.qcow2")]
    [InlineData("rebase -p -b other.qcow2 top.qcow2")]
    [InlineData("rebase -p -u -b other.qcow2 -F qcow2 top.qcow2")]
    [InlineData("rebase -p -b nonexist top.qcow2")]
    [InlineData("amend -p -o compat=0.10 top.qcow2")]
    [InlineData("amend -p -o compat=0.10 big.qcow2")]
    [InlineData("amend -p -o compat=1.1 top.qcow2")]
    [InlineData("amend -p -o size=8M top.qcow2")]
    [InlineData("amend -p -o compat=0.11 top.qcow2")]
    [InlineData("amend -p -o foo=1 top.qcow2")]
    [InlineData("amend -p -o compat=1.1 nonexist")]
    [InlineData("commit -p nonexist")]
    [InlineData("commit -p other.qcow2")]
    [InlineData("commit -p -b nonexist top.qcow2")]
    public void Rebase_amend_and_failed_commits_print_qemu_imgs_lines(string args)
    {
        using var sides = new SideBySide(dir =>
        {
            Img(dir, "create", "-q", "-f", "qcow2", "base.qcow2", "16M");
            Io(dir, "base.qcow2", "write -P 1 0 8M");
            Img(dir, "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "top.qcow2");
            Io(dir, "top.qcow2", "write -P 3 10M 1M");
            Img(dir, "create", "-q", "-f", "qcow2", "other.qcow2", "16M");
            Io(dir, "other.qcow2", "write -P 1 0 4M");
            Img(dir, "create", "-q", "-f", "qcow2", "big.qcow2", "4G");
            Io(dir, "big.qcow2", "write -z 0 64k", "write -z 2G 64k", "write -P 7 3G 64k");
        });
        sides.Same(args.Split(' ').Select(a => a == "''" ? "" : a).ToArray());
    }

    /// <summary>A commit's steps depend on its block job's timing in qemu-img: the lines follow the grammar, rise, and end at 100%.</summary>
    [Fact]
    public void Commit_prints_rising_lines_to_100_then_the_message()
    {
        using var dir = new TempDir();
        Img(dir.Path, "create", "-q", "-f", "qcow2", "base.qcow2", "64M");
        Img(dir.Path, "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "top.qcow2");
        Io(dir.Path, "top.qcow2", "write -P 3 0 32M");
        var r = Qemu.Ok(SideBySide.RunIn(dir.Path, Programs.Vdisk, ["commit", "-p", "top.qcow2"]));
        Assert.EndsWith("\nImage committed.\n", r.Stdout);
        string progress = r.Stdout[..^"Image committed.\n".Length];
        Assert.Matches(Line, progress);
        var values = Regex.Matches(progress, @"\((\d+\.\d\d)/").Select(m => double.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture)).ToList();
        Assert.Equal(0.0, values[0]);
        Assert.Equal(100.0, values[^1]);
        Assert.Equal(values.Order(), values);
    }

    /// <summary>On a terminal the bar is drawn instead, and its last frame (at 100%) is left on screen.</summary>
    [Fact]
    public void On_a_terminal_the_bar_is_left_at_100_percent()
    {
        using var dir = new TempDir();
        Img(dir.Path, "create", "-q", "-f", "qcow2", "full.qcow2", "16M");
        Io(dir.Path, "full.qcow2", "write -P 1 0 16M");
        string command = $"'{Programs.Vdisk}' convert -p '{dir.File("full.qcow2")}' '{dir.File("o.img")}'";
        var r = Qemu.Ok(Programs.Run("script", "-qfec", command, "/dev/null"));
        int last = r.Stdout.LastIndexOf("100%", StringComparison.Ordinal);
        Assert.True(last >= 0, r.ToString());
        // Nothing after the last frame moves the cursor up or erases a line.
        Assert.DoesNotMatch(new Regex(@"\x1b\[\d*[AK]"), r.Stdout[last..]);
    }

    /// <summary>SIGUSR1 without -p: one report on stderr, as with qemu-img, and the conversion goes on.</summary>
    [Theory]
    [InlineData("qemu-img")]
    [InlineData("vdisk")]
    public async Task Sigusr1_without_p_reports_once_on_stderr(string tool)
    {
        using var dir = new TempDir();
        Img(dir.Path, "create", "-q", "-f", "qcow2", "full.qcow2", "8M");
        Io(dir.Path, "full.qcow2", "write -P 1 0 8M");
        // 1 MiB/s: the copy lasts several seconds, long enough to be asked in the middle.
        var psi = Programs.StartInfo(tool == "vdisk" ? Programs.Vdisk : tool, ["convert", "-r", "1M", "-O", "raw", dir.File("full.qcow2"), dir.File("o.img")]);
        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync();
        var stdout = p.StandardOutput.ReadToEndAsync();
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (!CatchesSigusr1(p.Id))
        {
            Assert.True(DateTime.UtcNow < deadline && !p.HasExited, "the program never installed its SIGUSR1 handler");
            Thread.Yield();
        }
        Assert.Equal(0, Kill(p.Id, 10));
        Assert.True(p.WaitForExit(TimeSpan.FromSeconds(60)));
        Assert.Equal(0, p.ExitCode);
        Assert.Equal("", await stdout);
        Assert.Matches(new Regex(@"^    \(\d+\.\d\d/100%\)\n$"), await stderr);
        Qemu.AssertIdentical(dir.File("full.qcow2"), dir.File("o.img"));
    }

    /// <summary>True once /proc says the process catches SIGUSR1 (bit 10 of SigCgt).</summary>
    private static bool CatchesSigusr1(int pid)
    {
        try
        {
            var line = File.ReadLines($"/proc/{pid}/status").FirstOrDefault(l => l.StartsWith("SigCgt:", StringComparison.Ordinal));
            return line is not null && (Convert.ToUInt64(line[7..].Trim(), 16) & (1UL << 9)) != 0;
        }
        catch (IOException)
        {
            return false;
        }
    }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static extern int Kill(int pid, int signal);
}
