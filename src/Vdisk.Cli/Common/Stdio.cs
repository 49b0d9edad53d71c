using Vdisk.Graph;
using Vdisk.Locking;
using Vdisk.Native;
using Vdisk.Options;

namespace Vdisk.Cli.Common;

/// <summary>Output conventions shared by every verb: one-line errors prefixed with the program name.</summary>
internal static class Stdio
{
    /// <summary>
    /// The name before every message: "vdisk", or the QEMU tool's name when started under it
    /// (<see cref="Personality"/>). Set once at start-up: it is the process's identity, not an option.
    /// </summary>
    public static string Program { get; private set; } = "vdisk";

    public static void SetProgram(Tool tool) => Program = Personality.ProgramName(tool);

    /// <summary>stdout, buffered: qemu-io's output can be many lines per second.</summary>
    public static readonly TextWriter Out = new StreamWriter(Console.OpenStandardOutput(), new System.Text.UTF8Encoding(false), 1 << 16) { AutoFlush = false, NewLine = "\n" };

    /// <summary>Prints <c>PROGRAM: MESSAGE</c> on stderr (after flushing stdout, to keep order in a terminal).</summary>
    public static void Error(string message)
    {
        Out.Flush();
        Console.Error.Write($"{Program}: {message}\n");
    }

    /// <summary>Prints text on stderr as is.</summary>
    public static void ErrorRaw(string text)
    {
        Out.Flush();
        Console.Error.Write(text);
    }

    private static readonly HashSet<string> s_warned = new(StringComparer.Ordinal);

    /// <summary>Routes library warnings to stderr as QEMU's warn_report does (and error_report lines as Error does).</summary>
    public static void InstallWarningSink()
    {
        Diagnostics.ErrorSink = Error;
        Diagnostics.WarningSink = Warning;
    }

    private static void Warning(string message)
    {
        // Retried opens (--wait) would repeat the same warning on every attempt: say it once.
        lock (s_warned)
        {
            if (!s_warned.Add(message)) return;
        }
        Out.Flush();
        if (message.StartsWith('\n')) Console.Error.Write(message[1..] + "\n");
        else Console.Error.Write($"{Program}: warning: {message}\n");
    }

    /// <summary>
    /// The text QEMU prints for a failure to open or lock: the message, plus the hint line for
    /// lock conflicts. Exceptions that are not expected user-facing failures return null.
    /// </summary>
    public static string? Describe(Exception e) => e switch
    {
        LockConflictException l when l.FromTest => l.Message + "\n" + l.Hint,
        LockConflictException l => l.Message,
        OptionException or NativeIOException or PermissionConflictException => e.Message,
        IOException => e.Message,
        UnauthorizedAccessException => e.Message,
        _ => null,
    };
}
