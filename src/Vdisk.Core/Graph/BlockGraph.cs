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

    /// <summary>
    /// The cluster-lock settings of the file nodes opened into this graph (a run's
    /// <c>--cluster</c>); null reads the <c>VDISK_ETCD_*</c> environment at each such open.
    /// </summary>
    public Locking.Cluster.ClusterLockSettings? ClusterLocks { get; init; }

    /// <summary>The nodes, by name.</summary>
    public IReadOnlyDictionary<string, BlockNode> Nodes => _nodes;

    /// <summary>The node named <paramref name="name"/>, or null.</summary>
    public BlockNode? Find(string name) => _nodes.TryGetValue(name, out var node) ? node : null;

    /// <summary>Adds a node under its name.</summary>
    public void Add(BlockNode node) => Add(node, null);

    /// <summary>Registers a node at a place in the node order taken earlier (<see cref="NextSequence"/>).</summary>
    internal void Add(BlockNode node, long? sequence)
    {
        if (!_nodes.TryAdd(node.NodeName, node))
            throw new Options.OptionException($"Duplicate nodes with node-name='{node.NodeName}'");
        node.GraphSequence = sequence ?? ++_sequence;
    }

    /// <summary>Takes the next place in the node order for a node that is still being opened.</summary>
    internal long NextSequence() => ++_sequence;

    private long _sequence;

    /// <summary>The nodes, newest first (the order of QMP query-named-block-nodes).</summary>
    public IEnumerable<BlockNode> NodesNewestFirst => _nodes.Values.OrderByDescending(n => n.GraphSequence);

    /// <summary>Removes a node from the registry.</summary>
    public void Remove(BlockNode node) => _nodes.Remove(node.NodeName);

    private readonly Dictionary<BlockNode, List<BlockNode>> _implicitChildren = new();

    /// <summary>
    /// Opens a node and its implicitly created children into this graph (QMP blockdev-add,
    /// --blockdev). The node stays open, without users, until <see cref="DeleteNodeAsync"/>.
    /// </summary>
    public BlockNode AddNode(Options.OptionDict options, Permissions.OpenFlags flags)
    {
        var opener = new GraphOpener(this);
        var top = opener.OpenTop(options, flags);
        try
        {
            // As bdrv_open attaching children: a format node asks its children for what it needs
            // even without users (a writable qcow2 locks its file at once), and a reference to an
            // existing node (file=f0) may conflict with that node's other parents.
            PermissionRefresh.Refresh([top]);
        }
        catch
        {
            opener.CloseOpenedAsync().AsTask().GetAwaiter().GetResult();
            throw;
        }
        var implicitChildren = new List<BlockNode>();
        foreach (var n in opener.OpenedNodes)
            if (n != top) implicitChildren.Add(n);
        _implicitChildren[top] = implicitChildren;
        return top;
    }

    /// <summary>
    /// Closes a node added with <see cref="AddNode"/> (QMP blockdev-del), with the children that
    /// were created with it and that nothing else uses.
    /// </summary>
    /// <exception cref="InvalidOperationException">QEMU's messages: node not found, or in use.</exception>
    public async ValueTask DeleteNodeAsync(string nodeName)
    {
        var node = Find(nodeName) ?? throw new InvalidOperationException($"Failed to find node with node-name='{nodeName}'");
        // qmp_blockdev_del's order: a user that is no node (an export's backend) first, then
        // ownership, then parent nodes (a quorum or a format over it).
        if (node.Parents.Any(p => p.Parent is not BlockNode)) throw new InvalidOperationException($"Node {nodeName} is in use");
        if (!_implicitChildren.ContainsKey(node))
            throw new InvalidOperationException($"Node {nodeName} is not owned by the monitor");
        if (node.Parents.Count > 0) throw new InvalidOperationException($"Block device {nodeName} is in use");
        _implicitChildren.Remove(node, out var implicitChildren);
        implicitChildren ??= [];
        await CloseSubtreeAsync(node, implicitChildren).ConfigureAwait(false);
    }

    private async ValueTask CloseSubtreeAsync(BlockNode node, List<BlockNode> implicitChildren)
    {
        var children = node.Children.ToArray();
        var childNodes = children.Select(c => c.Node).Distinct().ToArray();
        foreach (var edge in children) node.DetachChild(edge);
        // Detaching loosens the children's requests: let their locks follow.
        PermissionRefresh.Refresh(childNodes);
        Remove(node);
        await node.CloseAsync().ConfigureAwait(false);
        foreach (var child in childNodes)
            if (implicitChildren.Contains(child) && child.Parents.Count == 0)
                await CloseSubtreeAsync(child, implicitChildren).ConfigureAwait(false);
    }

    /// <summary>Closes every node (daemon shutdown): users must have been detached first.</summary>
    public async ValueTask CloseAllAsync()
    {
        // Parents first: a node referenced by another (file=f0) becomes closable once its parent is gone.
        bool progress = true;
        while (progress)
        {
            progress = false;
            foreach (var (node, implicitChildren) in _implicitChildren.ToArray())
            {
                if (node.Parents.Count > 0) continue;
                _implicitChildren.Remove(node);
                await CloseSubtreeAsync(node, implicitChildren).ConfigureAwait(false);
                progress = true;
            }
        }
    }

    /// <summary>A fresh automatic node name, like QEMU's <c>#block123</c>.</summary>
    public static string GenerateName()
    {
        // Digits by hand: long.ToString runs System.Number's static constructor, which a refused
        // open otherwise never needs (~1% of it).
        ulong n = (ulong)Interlocked.Increment(ref s_nextGeneratedName);
        Span<char> digits = stackalloc char[20];
        int start = digits.Length;
        do
        {
            digits[--start] = (char)('0' + (int)(n % 10));
            n /= 10;
        } while (n != 0);
        return string.Concat("#block", digits[start..]);
    }

    /// <summary>QEMU's id_wellformed: a letter, then letters, digits, '-', '.', '_'; under 32 characters.</summary>
    public static bool IsValidNodeName(string name)
    {
        if (name.Length is 0 or >= 32 || !char.IsAsciiLetter(name[0])) return false;
        foreach (char c in name)
            if (!char.IsAsciiLetterOrDigit(c) && c is not ('-' or '.' or '_')) return false;
        return true;
    }
}
