namespace Vdisk;

/// <summary>
/// Where the library sends warnings that QEMU prints with warn_report (the CLI routes them to
/// stderr as <c>vdisk: warning: ...</c>). Lines starting with a newline continue the previous warning.
/// </summary>
public static class Diagnostics
{
    /// <summary>Receives warning text; null drops warnings.</summary>
    public static Action<string>? WarningSink { get; set; }

    internal static void Warn(string message) => WarningSink?.Invoke(message);

    /// <summary>A line QEMU prints on stderr as it is (fprintf, no program prefix), such as qcow2's corruption notices.</summary>
    internal static void Report(string line) => WarningSink?.Invoke("\n" + line);

    /// <summary>Receives text QEMU prints with error_printf: as it is, no newline added; null drops it.</summary>
    public static Action<string>? PrintSink { get; set; }

    /// <summary>An error_printf: <paramref name="text"/> on stderr as it is (QEMU's qcow2 bitmap notice has no newline).</summary>
    internal static void Print(string text) => PrintSink?.Invoke(text);

    /// <summary>Receives errors that QEMU prints with error_report and then carries on (the CLI prints <c>vdisk: MESSAGE</c>); null drops them.</summary>
    public static Action<string>? ErrorSink { get; set; }

    /// <summary>An error_report line, such as vhdx's notice of a BAT entry past the end of the file before the open fails.</summary>
    internal static void Error(string message) => ErrorSink?.Invoke(message);

    /// <summary>
    /// Receives a line QEMU prints on stderr right before exit(1) (blkverify's mismatch); the CLI
    /// flushes its output first. Null: the line goes to <see cref="Console.Error"/>.
    /// </summary>
    public static Action<string>? FatalSink { get; set; }

    /// <summary>Prints <paramref name="line"/> as it is and ends the process with status 1, as QEMU's exit(1) after an fprintf.</summary>
    internal static void Fatal(string line)
    {
        if (FatalSink is { } sink) sink(line);
        else Console.Error.WriteLine(line);
        Environment.Exit(1);
    }
}
