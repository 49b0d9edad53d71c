using Vdisk.Interop.Support;
using Xunit;

namespace Vdisk.Interop;

/// <summary>The test suite's one process helper shows output exactly as a terminal would get it.</summary>
public class ChildProcessTests
{
    [Fact]
    public void Output_is_captured_byte_for_byte()
    {
        var r = Programs.Run("sh", "-c", "printf 'one\\ntwo'; printf 'e\\r\\n\\n' >&2; printf '\\377' >&2; exit 3");
        Assert.Equal(3, r.ExitCode);
        Assert.Equal("one\ntwo", r.Stdout); // no final newline is made up
        Assert.Equal("e\r\n\n\uFFFD", r.Stderr); // CR kept, blank line kept, a bad byte shows as U+FFFD
    }

    [Fact]
    public void Waiting_for_output_ends_when_it_arrives_and_fails_when_the_program_exits_without_it()
    {
        using (var p = ChildProcess.Start("sh", ["-c", "echo ready; exec sleep 600"]))
        {
            p.WaitForStdout("ready\n");
            Assert.False(p.HasExited);
        }
        using var quitter = ChildProcess.Start("sh", ["-c", "echo bye >&2; exit 4"]);
        var e = Assert.Throws<InvalidOperationException>(() => quitter.WaitForStdout("ready"));
        Assert.Contains("exited with 4", e.Message);
        Assert.Contains("stderr: bye\n", e.Message);
    }
}
