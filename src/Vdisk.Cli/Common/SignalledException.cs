namespace Vdisk.Cli.Common;

/// <summary>A signal (Ctrl-C, SIGTERM) ended a wait: the verb stops and the process exits with 128+signal.</summary>
internal sealed class SignalledException(int exitCode) : Exception("interrupted by a signal")
{
    public int ExitCode { get; } = exitCode;
}
