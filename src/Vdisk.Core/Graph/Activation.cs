
namespace Vdisk.Graph;

/// <summary>
/// Node activity for migration hand-over (QEMU's bdrv_inactivate / bdrv_activate, and the
/// QMP command blockdev-set-active of QEMU 10.0). An inactive node takes no locks; inactivating
/// releases them the way QEMU does (qcow2 keeps consistent-read on its file, raw keeps nothing);
/// activating takes them again and fails with QEMU's lock message if another process still
/// holds them.
/// </summary>
public static class Activation
{
    /// <summary>Inactivates <paramref name="node"/> and the children no active node still uses.</summary>
    /// <exception cref="InvalidOperationException"><c>Node has active parent node</c>.</exception>
    public static void Inactivate(BlockNode node)
    {
        if (node.IsInactive) return;
        if (node.Parents.Any(p => p.Parent is BlockNode parent && !parent.IsInactive))
            throw new InvalidOperationException("Node has active parent node");
        InactivateRecursive(node);
    }

    private static void InactivateRecursive(BlockNode node)
    {
        if (node.IsInactive) return;
        if (node.Parents.Any(p => p.Parent is BlockNode parent && !parent.IsInactive)) return;
        node.OnInactivating();
        foreach (var edge in node.Parents)
            if (edge.Parent is DiskImage user) user.Suspend();
        node.Flags |= Permissions.NodeFlags.Inactive;
        try
        {
            // Pushes the loosened requests down while the children are still active, so file
            // nodes unlock the bytes they no longer need before they stop locking.
            PermissionRefresh.Refresh([node]);
        }
        catch (IOException e)
        {
            Diagnostics.Warn(e.Message);
        }
        foreach (var child in node.Children) InactivateRecursive(child.Node);
    }

    /// <summary>Activates the children of <paramref name="node"/>, then the node, then its users.</summary>
    /// <exception cref="IOException">The locks could not be taken (another process holds them).</exception>
    public static void Activate(BlockNode node)
    {
        foreach (var child in node.Children) Activate(child.Node);
        if (node.IsInactive)
        {
            node.Flags &= ~Permissions.NodeFlags.Inactive;
            try
            {
                PermissionRefresh.Refresh([node]);
            }
            catch
            {
                node.Flags |= Permissions.NodeFlags.Inactive;
                throw;
            }
            node.OnActivated();
        }
        try
        {
            foreach (var edge in node.Parents.ToArray())
                if (edge.Parent is DiskImage user) user.Resume();
        }
        catch
        {
            // As bdrv_activate: a user that cannot take its permissions leaves the node inactive.
            node.Flags |= Permissions.NodeFlags.Inactive;
            throw;
        }
    }

    /// <summary>Inactivates every node without a node parent (bdrv_inactivate_all).</summary>
    public static void InactivateAll(BlockGraph graph)
    {
        foreach (var node in graph.Nodes.Values.Where(n => !n.Parents.Any(p => p.Parent is BlockNode)).ToArray())
            InactivateRecursive(node);
    }

    /// <summary>Activates every node (bdrv_activate_all).</summary>
    public static void ActivateAll(BlockGraph graph)
    {
        foreach (var node in graph.Nodes.Values.Where(n => !n.Parents.Any(p => p.Parent is BlockNode)).ToArray())
            Activate(node);
    }

    /// <summary>
    /// vdisk's extension for a hand-over without a gap. Between a source's inactivation and a
    /// destination's activation nobody holds a raw image (QEMU's inactivation keeps nothing),
    /// so a third program could open it for writing. Reserving on the inactive destination locks,
    /// on its own descriptors and without testing, the "does not share" bytes its users will
    /// take once active: new writers are refused from then on, while the destination's own
    /// activation does not see those bytes and succeeds as soon as the source has let go. It
    /// locks no "holds" byte, so the two sides never both hold write.
    /// </summary>
    public static void Reserve(BlockNode node)
    {
        foreach (var (n, planned) in PermissionRefresh.PlanActive(node)) n.ReserveUnshared(planned.Unshared);
    }

    /// <summary>Drops a reservation (after activation, or to let the source take its locks back).</summary>
    public static void ReleaseReservation(BlockNode node)
    {
        foreach (var n in PermissionRefresh.TopologicalOrder([node])) n.ReleaseReservation();
    }
}
