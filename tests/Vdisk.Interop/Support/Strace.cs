namespace Vdisk.Interop.Support;

/// <summary>
/// A short-lived program run to its end under strace: its exit status and output as without
/// strace, and the lines strace wrote for the system calls asked for (those of every thread and
/// child, <c>-f</c>), kept apart from the program's own output in a log file.
/// </summary>
internal static class Strace
{
    /// <param name="syscalls">strace's <c>-e trace=</c> list, e.g. <c>openat,open</c>.</param>
    public static (RunResult Result, string[] Calls) Run(string syscalls, string program, params string[] args)
    {
        string log = Path.Combine(Path.GetTempPath(), $"vdisk-strace-{Guid.NewGuid():N}.log");
        try
        {
            var result = Programs.Run("strace", ["-f", "-qq", "-e", "trace=" + syscalls, "-o", log, program, .. args], null);
            return (result, File.ReadAllLines(log));
        }
        finally
        {
            File.Delete(log);
        }
    }
}
