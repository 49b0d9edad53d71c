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
    /// child's): each goes to the node it names; the mode and cache options and raw's window
    /// may change, node-name and driver only to what they are, anything else not at all. Returns
    /// QEMU's message for the first option refused, or null; <paramref name="rawWindows"/> gets
    /// the raw nodes whose offset or size is to change.
    /// </summary>
    public static string? CheckOptions(BlockNode node, IReadOnlyDictionary<string, string?> options,
        List<(Drivers.Raw.RawNode Node, ulong? Offset, ulong? Size)> rawWindows)
    {
        var own = new Dictionary<string, string?>(StringComparer.Ordinal);
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
        ulong? offset = null, size = null;
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
                case "offset" or "size" when node is Drivers.Raw.RawNode:
                    if (Options.SizeParser.Parse(value ?? "", out ulong number) != Options.SizeParseStatus.Ok)
                        return $"Parameter '{key}' expects a non-negative number below 2^64\n" +
                            "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n" +
                            "and exabytes, respectively.";
                    if (key == "offset") offset = number; else size = number;
                    break;
                default:
                    return $"Cannot change the option '{key}'";
            }
        }
        if ((offset is not null || size is not null) && node is Drivers.Raw.RawNode raw) rawWindows.Add((raw, offset, size));
        foreach (var (name, sub) in children)
        {
            if (CheckOptions(node.Child(name)!.Node, sub, rawWindows) is { } error) return error;
        }
        return null;
    }

    private static void Collect(BlockNode node, List<BlockNode> into)
    {
        if (into.Contains(node)) return;
        into.Add(node);
        foreach (var child in node.Children)
            if ((child.Role & ChildRole.Cow) == 0) Collect(child.Node, into);
    }
}
