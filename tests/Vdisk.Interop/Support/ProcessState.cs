namespace Vdisk.Interop.Support;

/// <summary>What /proc says about a process: whether it is idle, waiting for something rather than running.</summary>
public static class ProcessState
{
    /// <summary>
    /// The CPU time (user + system clock ticks) of all threads of <paramref name="pid"/>, and
    /// whether every thread is sleeping (state S); null when the process is gone.
    /// </summary>
    public static (long Ticks, bool Idle)? CpuTicks(int pid)
    {
        try
        {
            long ticks = 0;
            bool idle = true;
            foreach (var task in Directory.EnumerateDirectories($"/proc/{pid}/task"))
            {
                string stat = File.ReadAllText(Path.Combine(task, "stat"));
                // After "pid (comm) ": state, then fields 4..; utime and stime are fields 14 and 15.
                var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
                idle &= fields[0] == "S";
                ticks += long.Parse(fields[11], System.Globalization.CultureInfo.InvariantCulture) +
                    long.Parse(fields[12], System.Globalization.CultureInfo.InvariantCulture);
            }
            return (ticks, idle);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>
    /// Polls until <paramref name="process"/> has exited or sits idle (every thread sleeping, no
    /// CPU used) for <paramref name="polls"/> polls in a row: blocked on something outside it.
    /// </summary>
    /// <exception cref="TimeoutException">Neither within 30 s.</exception>
    public static void WaitUntilExitedOrBlocked(ChildProcess process, int polls = 5)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        long last = -1;
        int idle = 0;
        while (!process.HasExited)
        {
            var cpu = CpuTicks(process.Pid);
            idle = cpu is { Idle: true } c && c.Ticks == last ? idle + 1 : 0;
            last = cpu?.Ticks ?? -1;
            if (idle >= polls) return;
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"process {process.Pid} neither exited nor blocked");
            process.WaitForExit(TimeSpan.FromMilliseconds(40));
        }
    }
}
