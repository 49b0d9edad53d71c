using Vdisk.Permissions;

namespace Vdisk.Graph;

/// <summary>Two users of one node inside this process want incompatible permissions.</summary>
public sealed class PermissionConflictException(string message) : IOException(message);

/// <summary>
/// QEMU's permission update as a transaction over the graph (bdrv_refresh_perms): compute every
/// affected edge top-down with the drivers' rules, check parents of each node against each
/// other, then PREPARE on every node (file nodes lock and test), and COMMIT all or ABORT all.
/// </summary>
public static class PermissionRefresh
{
    /// <summary>Refreshes everything below <paramref name="starts"/> (the nodes whose parents changed).</summary>
    /// <exception cref="Locking.LockConflictException">Another process holds or refuses a permission.</exception>
    public static void Refresh(ReadOnlySpan<BlockNode> starts)
    {
        if (TryRefresh(starts) is { } conflict) throw conflict;
    }

    /// <summary>
    /// <see cref="Refresh"/>, with a conflict with another process's locks returned instead of
    /// thrown, after everything is rolled back (a refused open costs no exception dispatch).
    /// </summary>
    public static Locking.LockConflictException? TryRefresh(ReadOnlySpan<BlockNode> starts)
    {
        var order = TopologicalOrder(starts);
        var savedEdges = new Dictionary<BdrvChild, PermissionPair>();
        var cumulative = new Dictionary<BlockNode, PermissionPair>();
        // Undo in finally blocks, not catch-and-rethrow: each rethrow is another exception
        // dispatch, and a refused open (a lock conflict) passes through several on its way out.
        bool computed = false;
        try
        {
            foreach (var node in order)
            {
                var cum = Cumulative(node);
                CheckParentConflicts(node);
                CheckWritable(node, cum);
                cumulative[node] = cum;
                foreach (var child in node.Children)
                {
                    savedEdges.TryAdd(child, child.Permissions);
                    var request = node.PermissionRule.ChildPermissions(child.Role, node.Flags, cum);
                    child.Permissions = DefaultPermissions.ApplyForceShare(request, child.Node.Flags);
                }
            }
            computed = true;
        }
        finally
        {
            if (!computed) Restore(savedEdges);
        }

        var prepared = new List<BlockNode>();
        bool allPrepared = false;
        try
        {
            foreach (var node in order)
            {
                if (node.PreparePermissions(cumulative[node]) is { } conflict) return conflict;
                prepared.Add(node);
            }
            allPrepared = true;
        }
        finally
        {
            if (!allPrepared)
            {
                for (int i = prepared.Count - 1; i >= 0; i--) prepared[i].AbortPermissions();
                Restore(savedEdges);
            }
        }

        foreach (var node in order)
        {
            node.CommitPermissions(cumulative[node]);
            node.CumulativePermissions = cumulative[node];
        }
        return null;
    }

    /// <summary>
    /// What <paramref name="top"/> and the nodes below it would be asked for once active, with
    /// suspended users back at their requests (pure: nothing changes). Used to reserve a
    /// destination's locks before it activates.
    /// </summary>
    public static Dictionary<BlockNode, PermissionPair> PlanActive(BlockNode top)
    {
        var planned = new Dictionary<BdrvChild, PermissionPair>();
        var result = new Dictionary<BlockNode, PermissionPair>();
        foreach (var node in TopologicalOrder([top]))
        {
            var perm = BlockPermission.None;
            var shared = BlockPermission.All;
            foreach (var edge in node.Parents)
            {
                var p = edge.Parent is DiskImage { IsSuspended: true } user ? user.RequestedPermissions
                    : planned.TryGetValue(edge, out var plan) ? plan : edge.Permissions;
                perm |= p.Perm;
                shared &= p.Shared;
            }
            var cumulative = new PermissionPair(perm, shared);
            result[node] = cumulative;
            var flags = node.Flags & ~NodeFlags.Inactive;
            foreach (var child in node.Children)
                planned[child] = DefaultPermissions.ApplyForceShare(node.PermissionRule.ChildPermissions(child.Role, flags, cumulative), child.Node.Flags);
        }
        return result;
    }

    /// <summary>bdrv_get_cumulative_perm: OR of parents' perms, AND of their shared masks.</summary>
    public static PermissionPair Cumulative(BlockNode node)
    {
        var perm = BlockPermission.None;
        var shared = BlockPermission.All;
        foreach (var edge in node.Parents)
        {
            perm |= edge.Permissions.Perm;
            shared &= edge.Permissions.Shared;
        }
        return new(perm, shared);
    }

    /// <summary>bdrv_parent_perms_conflict: every parent must share what every other parent takes.</summary>
    public static void CheckParentConflicts(BlockNode node)
    {
        foreach (var a in node.Parents)
        {
            foreach (var b in node.Parents)
            {
                if (ReferenceEquals(a, b)) continue;
                var refused = b.Permissions.Perm & ~a.Permissions.Shared;
                if (refused == 0) continue;
                throw new PermissionConflictException(
                    $"Permission conflict on node '{node.NodeName}': permissions '{BlockPermissions.Describe(refused)}' are both required by " +
                    $"{b.DescribeParent()} (uses node '{node.NodeName}' as '{b.Name}' child) and unshared by " +
                    $"{a.DescribeParent()} (uses node '{node.NodeName}' as '{a.Name}' child).");
            }
        }
    }

    private static void CheckWritable(BlockNode node, PermissionPair cumulative)
    {
        bool writable = !node.IsReadOnly && !node.IsInactive;
        if (!writable && (cumulative.Perm & (BlockPermission.Write | BlockPermission.WriteUnchanged)) != 0)
            throw new PermissionConflictException("Block node is read-only");
    }

    private static void Restore(Dictionary<BdrvChild, PermissionPair> saved)
    {
        foreach (var (edge, perms) in saved) edge.Permissions = perms;
    }

    /// <summary>Nodes reachable downwards from <paramref name="starts"/>, every parent before its children.</summary>
    public static List<BlockNode> TopologicalOrder(ReadOnlySpan<BlockNode> starts)
    {
        var visited = new HashSet<BlockNode>();
        var postOrder = new List<BlockNode>();
        foreach (var s in starts) Visit(s, visited, postOrder);
        postOrder.Reverse();
        return postOrder;
    }

    private static void Visit(BlockNode node, HashSet<BlockNode> visited, List<BlockNode> postOrder)
    {
        if (!visited.Add(node)) return;
        foreach (var child in node.Children) Visit(child.Node, visited, postOrder);
        postOrder.Add(node);
    }
}
