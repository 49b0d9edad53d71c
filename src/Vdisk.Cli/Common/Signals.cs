using System.Runtime.InteropServices;

namespace Vdisk.Cli.Common;

/// <summary>
/// SIGINT/SIGTERM end long-running verbs cleanly: the token is cancelled, the verb closes its
/// images (releasing their locks), and the process exits with 128+signal like a shell expects.
/// </summary>
internal sealed class Signals : IDisposable
{
    private readonly CancellationTokenSource _cts = new();
    private readonly PosixSignalRegistration[] _registrations;

    public Signals()
    {
        _registrations =
        [
            PosixSignalRegistration.Create(PosixSignal.SIGINT, Handle),
            PosixSignalRegistration.Create(PosixSignal.SIGTERM, Handle),
        ];
    }

    public CancellationToken Token => _cts.Token;

    /// <summary>The signal that arrived, or 0.</summary>
    public int Received { get; private set; }

    /// <summary>The exit status for a run that a signal ended, or <paramref name="normal"/>.</summary>
    public int ExitCode(int normal) => Received == 0 ? normal : 128 + Received;

    private void Handle(PosixSignalContext context)
    {
        context.Cancel = true;
        Received = context.Signal == PosixSignal.SIGINT ? 2 : 15;
        _cts.Cancel();
    }

    public void Dispose()
    {
        foreach (var r in _registrations) r.Dispose();
        _cts.Dispose();
    }
}
