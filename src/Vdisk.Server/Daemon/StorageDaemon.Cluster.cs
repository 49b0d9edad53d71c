using Vdisk.Graph;
using Vdisk.Locking.Cluster;
using Vdisk.Options;
using static Vdisk.Server.Qmp.QmpJson;

namespace Vdisk.Server.Daemon;

/// <summary>The daemon's side of cluster locks: reacting to a fence, and the fencing token in queries.</summary>
public sealed partial class StorageDaemon
{
    /// <summary>The QMP event of a fence (vdisk's): node-name, cluster-lock-id, fencing-token, reason, and the nodes now inactive.</summary>
    public const string ClusterFencedEvent = "X_VDISK_CLUSTER_FENCED";

    /// <summary>
    /// Creates a daemon; it follows cluster lock fences of this process. Its file nodes with
    /// <c>cluster-lock-id</c> use <paramref name="clusterLocks"/> (null: the <c>VDISK_ETCD_*</c> environment).
    /// </summary>
    public StorageDaemon(ClusterLockSettings? clusterLocks = null)
    {
        Graph = new BlockGraph { ClusterLocks = clusterLocks };
        ClusterLocks.SessionFenced += OnSessionFenced;
    }

    /// <summary>
    /// The process lost its lease: under the control lock (no command runs meanwhile), the nodes
    /// on that lease become inactive and each fenced file node is reported with one event.
    /// </summary>
    private void OnSessionFenced(ClusterSession session) => _ = Task.Run(async () =>
    {
        try
        {
            await RunExclusiveAsync(() =>
            {
                foreach (var fenced in ClusterFencing.Inactivate(Graph, session))
                {
                    Emit(ClusterFencedEvent, Dict(
                        ("node-name", Str(fenced.File.NodeName)),
                        ("cluster-lock-id", Str(fenced.Lock.LockId)),
                        ("fencing-token", Str(fenced.Lock.FencingToken)),
                        ("reason", Str(session.FenceReason ?? "")),
                        ("inactive-nodes", List(fenced.Inactivated.Select(n => (OptionValue)Str(n.NodeName))))));
                }
                return Task.FromResult(true);
            }).ConfigureAwait(false);
        }
        catch (DaemonException)
        {
            // Shutting down: the nodes are being closed anyway.
        }
    });

    /// <summary>query-named-block-nodes' <c>x-vdisk-cluster-lock</c>: the node's cluster lock and fencing token, or null.</summary>
    private static OptionDict? ClusterLockInfo(BlockNode node)
    {
        if (ClusterFencing.LockOf(node) is not { } holder) return null;
        return Dict(
            ("lock-id", Str(holder.LockId)),
            ("host", Str(holder.Record.Host)),
            ("lease", Str(holder.Record.LeaseHex)),
            ("revision", Int(holder.Revision)),
            ("fencing-token", Str(holder.FencingToken)),
            ("fenced", Bool(holder.IsFenced)));
    }
}
