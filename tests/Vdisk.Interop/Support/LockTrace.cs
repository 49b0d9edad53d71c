using System.Text.RegularExpressions;

namespace Vdisk.Interop.Support;

/// <summary>
/// The sequence of lock syscalls a short-lived program makes on QEMU's lock bytes, captured with
/// strace: e.g. <c>SETLK RDLCK 100</c>, <c>GETLK WRLCK 200</c>, <c>SETLK UNLCK 100</c>.
/// The OFD probe (start 0 on /dev/null) is left out.
/// </summary>
public static partial class LockTrace
{
    [GeneratedRegex(@"fcntl(?:64)?\(\d+, F_(OFD_)?(SETLK|GETLK), \{l_type=F_(RDLCK|WRLCK|UNLCK), l_whence=SEEK_SET, l_start=(\d+), l_len=1")]
    private static partial Regex Call();

    public static (RunResult Result, List<string> Calls) Capture(string program, params string[] args)
    {
        var (result, lines) = Strace.Run("fcntl", program, args);
        var calls = new List<string>();
        foreach (var line in lines)
        {
            var m = Call().Match(line);
            if (!m.Success) continue;
            int start = int.Parse(m.Groups[4].Value, System.Globalization.CultureInfo.InvariantCulture);
            if (start < 100) continue;
            calls.Add($"{m.Groups[2].Value} {m.Groups[3].Value} {start}");
        }
        return (result, calls);
    }
}
