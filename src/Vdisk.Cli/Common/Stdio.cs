using Vdisk.Locking;

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

    /// <summary>
    /// stdout, buffered: qemu-io's output can be many lines per second. Written with write(2)
    /// (<see cref="Native.DescriptorWriteStream"/>): the console's own stream would start the
    /// runtime's terminal layer on the first write (docs/architecture.md, "Start-up"). Made at
    /// its first use, not with the rest of this class: a run that only reports an error never
    /// allocates its buffers.
    /// </summary>
    public static TextWriter Out => StandardOutput.Writer;

    /// <summary>stdout as bytes, for writers that produce UTF-8 themselves (large JSON): flushes <see cref="Out"/> first to keep the order.</summary>
    public static Stream OutBytes
    {
        get
        {
            Out.Flush();
            return StandardOutput.Writer.BaseStream;
        }
    }

    private static class StandardOutput
    {
        // 4 Ki characters, as glibc buffers QEMU's stdout on a pipe (4 KiB): 64 Ki cost a one-shot
        // command ~300 KiB of fresh buffers (chars and their UTF-8 bytes) and their page faults.
        public static readonly StreamWriter Writer = new StreamWriter(new Native.DescriptorWriteStream(1), new System.Text.UTF8Encoding(false), 1 << 12) { AutoFlush = false, NewLine = "\n" };
    }

    /// <summary>
    /// Makes <see cref="Console.Error"/> write stderr with write(2), UTF-8, unbuffered, as
    /// <see cref="Out"/> writes stdout: every message goes through it, and none should start
    /// the terminal layer.
    /// </summary>
    public static void UseDescriptorStandardError() =>
        Console.SetError(new StreamWriter(new Native.DescriptorWriteStream(2), new System.Text.UTF8Encoding(false), 1024) { AutoFlush = true, NewLine = "\n" });

    /// <summary>Prints <c>PROGRAM: MESSAGE</c> on stderr (after flushing stdout, to keep order in a terminal).</summary>
    public static void Error(string message)
    {
        Out.Flush();
        Console.Error.Write($"{Program}: {message}\n");
    }

    /// <summary>Prints <c>PROGRAM: warning: MESSAGE</c> on stderr, as QEMU's warn_report does.</summary>
    public static void Warning(string message)
    {
        Out.Flush();
        Console.Error.Write($"{Program}: warning: {message}\n");
    }

    /// <summary>
    /// error_report where QEMU's tests show stdio's buffering: glibc line-buffers stdout into a
    /// terminal but block-buffers it into a pipe or file, so there the error overtakes what the
    /// tool printed before it (img_compare's "Warning: Image size mismatch!" comes after the
    /// read error it led to). Flushes stdout first only for a terminal.
    /// </summary>
    public static void ErrorOvertakingStdout(string message)
    {
        if (!Console.IsOutputRedirected) Out.Flush();
        Console.Error.Write($"{Program}: {message}\n");
    }

    /// <summary>Prints text on stderr as is.</summary>
    public static void ErrorRaw(string text)
    {
        Out.Flush();
        Console.Error.Write(text);
    }

    /// <summary>Routes library warnings to stderr as QEMU's warn_report does (and error_report lines as Error does).</summary>
    public static void InstallWarningSink()
    {
        Diagnostics.ErrorSink = Error;
        // exit(1) flushes stdio before the process ends: what was printed stays printed.
        Diagnostics.FatalSink = line =>
        {
            Out.Flush();
            Console.Error.Write(line + "\n");
        };
        Diagnostics.PrintSink = text =>
        {
            Out.Flush();
            Console.Error.Write(text);
        };
        // Retried opens (--wait) would repeat the same warning on every attempt: say it once.
        var warned = new HashSet<string>(StringComparer.Ordinal);
        Diagnostics.WarningSink = message =>
        {
            lock (warned)
            {
                if (!warned.Add(message)) return;
            }
            Out.Flush();
            if (message.StartsWith('\n')) Console.Error.Write(message[1..] + "\n");
            else Warning(message);
        };
    }

    /// <summary>
    /// The text QEMU's tools print for an expected failure (<see cref="UserErrors.Message"/>), plus
    /// the hint line of a lock conflict found by a test. Bugs return null.
    /// </summary>
    public static string? Describe(Exception e) => e switch
    {
        LockConflictException { FromTest: true } l => l.Message + "\n" + l.HintWithHolder,
        _ => UserErrors.Message(e),
    };
}
