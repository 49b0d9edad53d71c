using System.Runtime.InteropServices;
using Vdisk.Native;

namespace Vdisk.Cli.Common;

/// <summary>
/// SIGINT/SIGTERM end long-running verbs cleanly: the token is cancelled, the verb closes its
/// images (releasing their locks), and the process exits with 128+signal like a shell expects.
/// </summary>
internal sealed class Signals : IDisposable
{
    private readonly CancellationTokenSource _cts = new();
    private PosixSignalRegistration[]? _registrations;

    /// <summary>Handles the signals from now on (<paramref name="armed"/> false: from <see cref="Arm"/>).</summary>
    public Signals(bool armed = true)
    {
        if (armed) Arm();
    }

    /// <summary>
    /// Starts handling the signals. A verb that may never hold anything a kill would lose arms
    /// late (vdisk io: once its session writes): until then a signal ends the process by its
    /// default action, as it ends qemu-io, and the kernel drops the locks; a refused open or a
    /// run that only reads never pays for the runtime's signal handling (its thread and the
    /// terminal set-up, ~0.7 ms, about a tenth of a one-shot read).
    /// </summary>
    public void Arm() => _registrations ??=
    [
        PosixSignalRegistration.Create(PosixSignal.SIGINT, Handle),
        PosixSignalRegistration.Create(PosixSignal.SIGTERM, Handle),
    ];

    public CancellationToken Token => _cts.Token;

    /// <summary>
    /// Asked as a signal arrives, before the token is cancelled: true when the verb cannot end
    /// cleanly (qemu-io with a request that will never finish), and the process then ends by the
    /// signal at once, as a C program would.
    /// </summary>
    public Func<bool>? EndBySignalWhen { get; set; }

    /// <summary>The signal that arrived, or 0.</summary>
    public int Received { get; private set; }

    /// <summary>The exit status for a run that a signal ended, or <paramref name="normal"/>.</summary>
    public int ExitCode(int normal) => Received == 0 ? normal : 128 + Received;

    private void Handle(PosixSignalContext context)
    {
        context.Cancel = true;
        Received = context.Signal == PosixSignal.SIGINT ? 2 : 15;
        // Before cancelling: cancellation runs the verb's continuations on this thread first.
        if (EndBySignalWhen?.Invoke() == true) ProcessSignals.RaiseWithDefaultAction(Received);
        _cts.Cancel();
    }

    public void Dispose()
    {
        foreach (var r in _registrations ?? []) r.Dispose();
        _cts.Dispose();
    }
}
