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
}
