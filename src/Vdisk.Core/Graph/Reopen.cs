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
