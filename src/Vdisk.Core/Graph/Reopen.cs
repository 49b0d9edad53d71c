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

    /// <summary>
    /// bdrv_reopen_prepare's look at the options of a reopen (flattened, "file.x" for the file
    /// child's): each goes to the node it names; the mode and cache options may change,
    /// node-name and driver only to what they are, anything else only where the node's driver
    /// takes it (raw's offset and size). Returns QEMU's message for the first option refused,
    /// or null; <paramref name="prepared"/> gets the nodes to commit or abort afterwards.
    /// </summary>
    public static string? PrepareOptions(BlockNode node, IReadOnlyDictionary<string, string?> options, List<BlockNode> prepared)
    {
        var own = new Dictionary<string, string?>(StringComparer.Ordinal);
        var driverOwn = new Dictionary<string, string?>(StringComparer.Ordinal);
        var children = new Dictionary<string, Dictionary<string, string?>>(StringComparer.Ordinal);
        foreach (var (key, value) in options)
        {
            int dot = key.IndexOf('.');
            if (dot > 0 && node.Child(key[..dot]) is not null)
            {
                if (!children.TryGetValue(key[..dot], out var sub)) children[key[..dot]] = sub = new(StringComparer.Ordinal);
                sub[key[(dot + 1)..]] = value;
            }
            else own[key] = value;
        }
        foreach (var (key, value) in own)
        {
            switch (key)
            {
                case "read-only" or "cache.direct" or "cache.no-flush" or "auto-read-only":
                    if (value is not ("on" or "off")) return $"Parameter '{key}' expects 'on' or 'off'";
                    break;
                case "node-name" when value == node.NodeName:
                case "driver" when value == node.DriverName:
                    break;
                default:
                    driverOwn[key] = value;
                    break;
            }
        }
        if (driverOwn.Count > 0)
        {
            if (node.PrepareReopen(driverOwn) is { } refused) return refused;
            prepared.Add(node);
        }
        foreach (var (name, sub) in children)
        {
            if (PrepareOptions(node.Child(name)!.Node, sub, prepared) is { } error) return error;
        }
        return null;
    }

    /// <summary>bdrv_reopen_commit of the nodes <see cref="PrepareOptions"/> prepared.</summary>
    public static void Commit(IEnumerable<BlockNode> prepared)
    {
        foreach (var node in prepared) node.CommitReopen();
    }

    /// <summary>bdrv_reopen_abort of the nodes <see cref="PrepareOptions"/> prepared.</summary>
    public static void Abort(IEnumerable<BlockNode> prepared)
    {
        foreach (var node in prepared) node.AbortReopen();
    }

    private static void Collect(BlockNode node, List<BlockNode> into)
    {
        if (into.Contains(node)) return;
        into.Add(node);
        foreach (var child in node.Children)
            if ((child.Role & ChildRole.Cow) == 0) Collect(child.Node, into);
    }
}
