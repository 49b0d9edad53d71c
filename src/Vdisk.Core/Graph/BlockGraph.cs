namespace Vdisk.Graph;

/// <summary>
/// The nodes of one graph by name, so options can refer to existing nodes
/// (<c>file=f0</c>) and names stay unique. A daemon keeps one for its lifetime; an image opened
/// on its own gets a private one.
/// </summary>
public sealed class BlockGraph
{
    private static long s_nextGeneratedName;
    private readonly Dictionary<string, BlockNode> _nodes = new(StringComparer.Ordinal);

    /// <summary>The nodes, by name.</summary>
    public IReadOnlyDictionary<string, BlockNode> Nodes => _nodes;

    /// <summary>The node named <paramref name="name"/>, or null.</summary>
    public BlockNode? Find(string name) => _nodes.GetValueOrDefault(name);

    /// <summary>Adds a node under its name.</summary>
    public void Add(BlockNode node)
    {
        if (!_nodes.TryAdd(node.NodeName, node))
            throw new Options.OptionException($"Duplicate nodes with node-name='{node.NodeName}'");
    }

    /// <summary>Removes a node from the registry.</summary>
    public void Remove(BlockNode node) => _nodes.Remove(node.NodeName);

    /// <summary>A fresh automatic node name, like QEMU's <c>#block123</c>.</summary>
    public static string GenerateName() => "#block" + Interlocked.Increment(ref s_nextGeneratedName).ToString(System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>QEMU's id_wellformed: a letter, then letters, digits, '-', '.', '_'; under 32 characters.</summary>
    public static bool IsValidNodeName(string name) =>
        name.Length is > 0 and < 32 && char.IsAsciiLetter(name[0]) &&
        name.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '.' or '_');
}
