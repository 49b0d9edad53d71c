using System.Text.RegularExpressions;
using Vdisk.Interop.Support;
using Xunit;

namespace Vdisk.Interop;

/// <summary>
/// What a one-shot run does besides its work: <c>--version</c> and help print what the command-line
/// parser prints however they are spelled, and a refused open does nothing but the open (no look
/// at other processes, which only <c>--wait</c> and <c>vdisk locks</c> do).
/// </summary>
public class OneShotPathTests
{
    [Fact]
    public void Version_IsTheSameWhateverTheSpelling()
    {
        var exact = Programs.Run(Programs.Vdisk, "--version");
        var abbreviated = Programs.Run(Programs.Vdisk, "--vers");

        Assert.Equal(0, exact.ExitCode);
        Assert.Equal("", exact.Stderr);
        Assert.Matches(new Regex(@"\A[0-9]+\.[0-9]+\.[0-9]+[^\n]*\n\z"), exact.Stdout);
        Assert.Equal((abbreviated.ExitCode, abbreviated.Stdout, abbreviated.Stderr), (exact.ExitCode, exact.Stdout, exact.Stderr));
    }

    [Fact]
    public void Version_IsTheOneTheCommandLineParserPrints()
    {
        // A bare --version is answered from the version baked in at build time; with a second
        // word the whole tree parses it and System.CommandLine prints the assembly's attribute.
        var baked = Programs.Run(Programs.Vdisk, "--version");
        var parser = Programs.Run(Programs.Vdisk, "--version", "--version");

        Assert.Equal((0, ""), (parser.ExitCode, parser.Stderr));
        Assert.Equal(parser.Stdout, baked.Stdout);
    }

    private static readonly string[] s_verbs =
        ["io", "info", "locks", "create", "check", "convert", "map", "compare", "resize", "commit", "rebase", "measure", "snapshot", "amend"];

    public static TheoryData<string> Verbs() => new(s_verbs);

    [Theory]
    [MemberData(nameof(Verbs))]
    public void VerbHelp_ListsTheVerbsOptionsAndHelp_HoweverHelpIsAsked(string verb)
    {
        var help = Programs.Run(Programs.Vdisk, verb, "--help");
        string program = Path.GetFileName(Programs.Vdisk);

        Assert.Equal(0, help.ExitCode);
        Assert.Equal("", help.Stderr);
        Assert.Contains($"Usage:\n  {program} {verb} ", help.Stdout);
        Assert.Contains("\n  -?, -h, --help ", help.Stdout);
        if (verb != "locks") Assert.Contains("--wait <SECONDS>", help.Stdout);
        foreach (var spelling in new[] { "-h", "--he" })
        {
            var other = Programs.Run(Programs.Vdisk, verb, spelling);
            Assert.Equal((0, help.Stdout, ""), (other.ExitCode, other.Stdout, other.Stderr));
        }
    }

    [Fact]
    public void TopLevelHelp_ListsEveryVerb()
    {
        var help = Programs.Run(Programs.Vdisk, "--help");

        Assert.Equal(0, help.ExitCode);
        foreach (var verb in s_verbs.Append("serve"))
            Assert.Matches(new Regex($"\n  {verb} "), help.Stdout);
    }

    [Fact]
    public void OnATerminal_OutputIsQemuImgsByteForByte()
    {
        // The runtime's console stream, on its first write to a terminal, sent the keypad-mode
        // escape (ESC [?1h ESC =) before the output; qemu-img writes its text alone.
        using var dir = new TempDir();
        string image = dir.RawImage();
        var env = new Dictionary<string, string> { ["TERM"] = "xterm" };
        string OnTerminal(string program)
        {
            // script(1) runs the command on a new pseudo-terminal and copies what it wrote.
            var r = Programs.Run("script", ["-q", "-e", "-c", $"{program} info -f raw {image}", "/dev/null"], env);
            Assert.Equal(0, r.ExitCode);
            return r.Stdout;
        }

        string qemu = OnTerminal("qemu-img");
        Assert.StartsWith($"image: {image}\r\n", qemu);
        Assert.Equal(qemu, OnTerminal(Programs.Vdisk));
    }

    [Fact]
    public void Start_ReadsNoCpuCacheSizesFromSysfs()
    {
        // The runtime derives the GC's first gen0 budget from the CPU caches, nine sysfs files
        // read before Main (~0.2 ms a run) unless the binary names the budget (src/NativeStartup.props).
        var (r, opened) = Strace.Run("openat,open", Programs.Vdisk, "--version");

        Assert.Equal(0, r.ExitCode);
        Assert.Matches(@"^\d+\.\d+\.\d+", r.Stdout);
        Assert.Contains(opened, l => l.Contains("/sys/fs/cgroup") || l.Contains("/proc/self"));
        Assert.DoesNotContain(opened, l => l.Contains("/sys/devices/system/cpu/cpu0/cache"));
    }

    [Fact]
    public void RefusedOpen_OpensTheImageAndNothingAboutOtherProcesses()
    {
        using var dir = new TempDir();
        string image = dir.RawImage();
        using var holder = Holder.Start(image, Programs.LockProbe, "hold", image, "read,write", "write");
        var (r, calls) = Strace.Run("openat,open,readlink,getdents64", Programs.Vdisk, "io", "-f", "raw", image, "-c", "write 0 4k");

        Assert.Equal(1, r.ExitCode);
        Assert.Contains("Failed to get \"write\" lock", r.Stderr);
        var opened = calls.Where(l => l.Contains("open") || l.Contains("getdents")).ToList();
        Assert.Contains(opened, l => l.Contains(image));
        Assert.DoesNotContain(opened, l => l.Contains("/proc/locks") || Regex.IsMatch(l, "\"/proc/[0-9]+/(fd|fdinfo|cmdline|comm)"));
    }
}
