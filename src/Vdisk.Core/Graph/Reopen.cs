using Vdisk.Permissions;

namespace Vdisk.Graph;

/// <summary>
/// QEMU's bdrv_reopen_set_read_only: switch a node and the children it passes its mode to
/// (not its backing chain) between read-only and read-write, as one permission transaction.
/// File nodes switch to a read-write descriptor only after the new locks tested clean.
/// </summary>
public static class Reopen
{
    /// <summary>Reopens <paramref name="node"/> read-write or read-only; on a lock conflict nothing changes.</summary>
    public static void SetReadOnly(BlockNode node, bool readOnly)
    {
        var affected = new List<BlockNode>();
        Collect(node, affected);
        if (readOnly)
        {
            // bdrv_node_refresh_perm in a reopen: a node that is writable now but would not be
            // after it cannot keep the writers it has (those outside the reopened nodes: their own
            // children's permissions follow their new mode).
            foreach (var n in affected)
            {
                if ((n.Flags & NodeFlags.ReadWrite) == 0) continue;
                if (n.Parents.Any(p => !(p.Parent is BlockNode parent && affected.Contains(parent)) && (p.Permissions.Perm & (BlockPermission.Write | BlockPermission.WriteUnchanged)) != 0))
                    throw new PermissionConflictException($"Read-only block node '{n.NodeName}' cannot support read-write users");
            }
        }
        var saved = affected.Select(n => n.Flags).ToArray();
        foreach (var n in affected)
            n.Flags = readOnly ? n.Flags & ~NodeFlags.ReadWrite : n.Flags | NodeFlags.ReadWrite;
        try
        {
            PermissionRefresh.Refresh([node]);
        }
        catch
        {
            for (int i = 0; i < affected.Count; i++) affected[i].Flags = saved[i];
            throw;
        }
    }

    private static void Collect(BlockNode node, List<BlockNode> into)
    {
        if (into.Contains(node)) return;
        into.Add(node);
        foreach (var child in node.Children)
            if ((child.Role & ChildRole.Cow) == 0) Collect(child.Node, into);
    }
}
