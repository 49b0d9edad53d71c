using System.Runtime.InteropServices;
using Vdisk.Locking.Cluster;
using Vdisk.Locking.Cluster.Agent;
using Vdisk.Native;

namespace Vdisk.EtcdAgent;

/// <summary>
/// <c>vdisk-etcd --endpoints URL[,URL...] --attempt-timeout-ms N --operation-timeout-ms N</c>:
/// serves vdisk's cluster-lock store calls (framed on standard input and output, see
/// <see cref="AgentFrames"/>) against etcd until its standard input ends. Started by vdisk
/// (<see cref="AgentClusterStore"/>), not by users.
/// </summary>
internal static class Program
{
    private static async Task<int> Main(string[] args)
    {
        ClusterLockSettings settings;
        try
        {
            settings = AgentArguments.Parse(args);
        }
        catch (Exception e) when (e is ArgumentException or UriFormatException)
        {
            await Console.Error.WriteAsync($"{AgentClusterStore.HelperName}: {e.Message}\n").ConfigureAwait(false);
            return 1;
        }
        using var signals = EndWithParentOnly();
        using var store = new EtcdStore(settings);
        await using var input = Console.OpenStandardInput();
        await using var output = Console.OpenStandardOutput();
        try
        {
            await AgentServer.RunAsync(input, output, store).ConfigureAwait(false);
        }
        catch (AgentProtocolException e)
        {
            await Console.Error.WriteAsync($"{AgentClusterStore.HelperName}: {e.Message}\n").ConfigureAwait(false);
            return 1;
        }
        return 0;
    }

    /// <summary>
    /// The helper never outlives vdisk, and nothing but vdisk's end ends it. vdisk's end closes
    /// standard input; should anything else hold that pipe open, the kernel sends SIGTERM
    /// (PR_SET_PDEATHSIG). Signals that come while vdisk lives are ignored: the kernel sends the
    /// same SIGTERM when only the thread that started the helper ends (the runtime's Process.Start
    /// runs on a pool thread that may retire), and a Ctrl-C or a service manager's stop reaches the
    /// whole process group, while vdisk, ending cleanly, still needs the helper to delete its keys
    /// and revoke its lease. vdisk ends the helper by closing its input.
    /// </summary>
    private static SignalRegistrations EndWithParentOnly()
    {
        const int SigTerm = 15;
        ProcessSignals.SignalAtParentEnd(SigTerm);
        // Read after the prctl: a vdisk gone before it has closed the input, which ends the helper.
        int parent = ProcessSignals.ParentId;
        void Handle(PosixSignalContext context) => context.Cancel = ProcessSignals.ParentId == parent;
        return new SignalRegistrations(
        [
            PosixSignalRegistration.Create(PosixSignal.SIGTERM, Handle),
            PosixSignalRegistration.Create(PosixSignal.SIGINT, Handle),
            PosixSignalRegistration.Create(PosixSignal.SIGHUP, Handle),
        ]);
    }

    private sealed class SignalRegistrations(PosixSignalRegistration[] registrations) : IDisposable
    {
        public void Dispose()
        {
            foreach (var r in registrations) r.Dispose();
        }
    }
}
