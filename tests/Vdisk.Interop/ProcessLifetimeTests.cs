using System.Diagnostics;
using Vdisk.Interop.Support;
using Xunit;

namespace Vdisk.Interop;

/// <summary>What happens to locks when holders die or are told to stop.</summary>
public class ProcessLifetimeTests
{
    private static string QemuWrite(string img) => Outcome.Of(Programs.Run("qemu-io", "-f", "raw", img, "-c", "write 0 4k"));

    [Fact]
    public void KillNineOfVdiskHolder_FreesItsLocksAtOnce()
    {
        using var dir = new TempDir();
        var img = dir.RawImage();
        var holder = Support.Holder.Start(img, Programs.LockProbe, "hold", img, "read,write", "write");
        Assert.Equal("100,101,201", LockBytesHeld.Describe(LockBytesHeld.Read(holder.Pid, img)));
        Assert.Equal("Failed to get \"write\" lock +hint", QemuWrite(img));
        holder.Process.Kill();
        Assert.Equal(128 + 9, holder.Process.ExitCode);
        Assert.Equal("ok", QemuWrite(img));
        holder.Dispose();
    }

    [Theory]
    [InlineData("SIGTERM", 15)]
    [InlineData("SIGINT", 2)]
    public void SignalEndsVdiskIoCleanly_ReleasingItsLocks(string signal, int number)
    {
        using var dir = new TempDir();
        var img = dir.RawImage();
        using var holder = Support.Holder.Start(img, Programs.Vdisk, "io", "-f", "raw", img, "-c", "sleep 600000");
        Assert.NotEmpty(LockBytesHeld.Read(holder.Pid, img));
        Assert.Equal(0, Programs.Run("kill", $"-{signal}", holder.Pid.ToString(System.Globalization.CultureInfo.InvariantCulture)).ExitCode);
        var exit = holder.Process.Result(TimeSpan.FromSeconds(10));
        Assert.Equal(128 + number, exit.ExitCode);
        Assert.Equal("", exit.Stderr);
        Assert.Equal("ok", QemuWrite(img));
    }

    [Fact]
    public void SigtermEndsVdiskIo_WhileAnAioWriteIsHeldAtABreakpoint()
    {
        // 060 kills such a qemu-io, which dies by the signal (143); vdisk once waited for the held
        // write forever. (qemu-io's own notice is block-buffered on a pipe, so it cannot be awaited here.)
        using var dir = new TempDir();
        var img = dir.File("disk.qcow2");
        Assert.Equal(0, Programs.Run("qemu-img", "create", "-q", "-f", "qcow2", img, "1M").ExitCode);
        using var holder = Support.Holder.Start(img, Programs.Vdisk,
            "io", "-f", "qcow2", "blkdebug::" + img, "-c", "break write_aio A", "-c", "aio_write 0 4k", "-c", "sleep 600000");
        holder.Process.WaitForStdout("blkdebug: Suspended request 'A'");
        Assert.Equal(0, Programs.Run("kill", "-TERM", holder.Pid.ToString(System.Globalization.CultureInfo.InvariantCulture)).ExitCode);
        var exit = holder.Process.Result(TimeSpan.FromSeconds(10));
        Assert.Equal(128 + 15, exit.ExitCode);
        Assert.Equal("ok", Outcome.Of(Programs.Run("qemu-io", "-f", "qcow2", img, "-c", "write 0 4k")));
    }

    [Fact]
    public void SixteenSimultaneousExclusiveWriters_NeverTwoAdmitted()
    {
        using var dir = new TempDir();
        var img = dir.RawImage();
        var workers = Enumerable.Range(0, 16)
            .Select(_ => Process.Start(Programs.StartInfo(Programs.LockProbe, ["worker", img, "read,write", "write"]))!)
            .ToArray();
        try
        {
            foreach (var w in workers) Assert.Equal("ready", w.StandardOutput.ReadLine());
            int roundsWithOne = 0;
            for (int round = 0; round < 100; round++)
            {
                foreach (var w in workers) w.StandardInput.WriteLine("go");
                foreach (var w in workers) w.StandardInput.Flush();
                var answers = workers.Select(w => w.StandardOutput.ReadLine() ?? "eof").ToArray();
                int admitted = answers.Count(a => a == "admitted");
                Assert.True(admitted <= 1, $"round {round}: {admitted} admitted");
                foreach (var refusal in answers.Where(a => a != "admitted"))
                    Assert.Matches("^refused Failed to (get (shared )?\"write\" lock|lock byte 20?1)$", refusal);
                if (admitted == 1) roundsWithOne++;
                foreach (var w in workers) w.StandardInput.WriteLine("release");
                foreach (var w in workers) w.StandardInput.Flush();
                foreach (var w in workers) Assert.Equal("released", w.StandardOutput.ReadLine());
            }
            // Both racers may lose a round (QEMU's lock-then-test), but not every round.
            Assert.True(roundsWithOne > 0);
        }
        finally
        {
            foreach (var w in workers)
            {
                try { w.Kill(); w.WaitForExit(); } catch (InvalidOperationException) { }
                w.Dispose();
            }
        }
    }
}
