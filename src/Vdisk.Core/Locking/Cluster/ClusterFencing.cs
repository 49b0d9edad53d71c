using Vdisk.Drivers.File;
using Vdisk.Graph;
using Vdisk.Permissions;

namespace Vdisk.Locking.Cluster;

/// <summary>
/// What a long-lived graph does when its process's session fences itself: every file node whose
/// cluster lock was on that session lets go of its local locks too and becomes inactive, with
/// every node above it. Writes to them already fail with EIO (the file node checks the fence);
/// reads go on. Nothing is written on the way (a qcow2 node does not flush its caches: the image
/// may already belong to another host). <c>blockdev-set-active</c> later acquires everything
/// afresh under a new lease, like an activation after migration.
/// </summary>
public static class ClusterFencing
{
    /// <summary>A file node that was fenced, and the nodes that became inactive with it (itself first).</summary>
    public sealed record FencedNode(FileNode File, ClusterLockHolder Lock, IReadOnlyList<BlockNode> Inactivated);

    /// <summary>Inactivates what <paramref name="session"/>'s fence concerns in <paramref name="graph"/>.</summary>
    public static IReadOnlyList<FencedNode> Inactivate(BlockGraph graph, ClusterSession session)
    {
        var result = new List<FencedNode>();
        foreach (var file in graph.Nodes.Values.OfType<FileNode>().ToArray())
        {
            if (file.ClusterLock is not { } holder || !ReferenceEquals(holder.Session, session)) continue;
            file.ReleaseLocksAfterFence();
            var inactivated = new List<BlockNode>();
            MarkInactive(file, inactivated);
            result.Add(new FencedNode(file, holder, inactivated));
        }
        return result;
    }

    private static void MarkInactive(BlockNode node, List<BlockNode> inactivated)
    {
        if (!node.IsInactive)
        {
            node.Flags |= NodeFlags.Inactive;
            inactivated.Add(node);
        }
        foreach (var edge in node.Parents)
            if (edge.Parent is BlockNode parent) MarkInactive(parent, inactivated);
    }

    /// <summary>The cluster lock of <paramref name="node"/>: its own, or that of the file node under it (through file children).</summary>
    public static ClusterLockHolder? LockOf(BlockNode node)
    {
        for (BlockNode? n = node; n is not null; n = n.Child("file")?.Node)
            if (n is FileNode { ClusterLock: { } holder }) return holder;
        return null;
    }
}
