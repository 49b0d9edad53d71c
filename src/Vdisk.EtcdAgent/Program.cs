using Vdisk.Locking.Cluster;
using Vdisk.Locking.Cluster.Agent;

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
}
