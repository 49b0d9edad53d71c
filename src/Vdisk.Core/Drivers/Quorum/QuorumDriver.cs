using Vdisk.Graph;
using Vdisk.Options;

namespace Vdisk.Drivers.Quorum;

/// <summary>
/// QEMU's block/quorum.c: one disk kept on several children, writes to all of them, reads
/// decided by vote. Options: <c>children</c> (an array of child options or node names),
/// <c>vote-threshold</c>, <c>blkverify</c>, <c>rewrite-corrupted</c>, <c>read-pattern</c>
/// (<c>quorum</c> or <c>fifo</c>); refused with quorum_open's messages, in its order.
/// </summary>
public sealed class QuorumDriver : IBlockDriver
{
    /// <inheritdoc />
    public string Name => "quorum";

    /// <inheritdoc />
    public bool IsProtocol => false;

    /// <inheritdoc />
    public BlockNode Open(NodeOpenContext context)
    {
        var o = context.Options;
        var children = ChildArray(o.Take("children"));
        if (children.Count < 1) throw new OptionException("Number of provided children must be 1 or more");

        ulong threshold = o.TakeNumber("vote-threshold") ?? 0;
        bool? blkverify = o.TakeBool("blkverify");
        bool? rewrite = o.TakeBool("rewrite-corrupted");
        string? pattern = o.TakeString("read-pattern");
        // quorum_valid_threshold takes the number as an int.
        int votes = unchecked((int)threshold);
        if (votes < 1) throw new OptionException("Parameter 'vote-threshold' expects a value >= 1");
        if (votes > children.Count) throw new OptionException("threshold may not exceed children count");
        if (pattern is not (null or "quorum" or "fifo")) throw new OptionException("Please set read-pattern as fifo or quorum");
        bool fifo = pattern == "fifo";
        var settings = new QuorumSettings(votes, fifo, fifo ? false : blkverify ?? false, fifo ? false : rewrite ?? false);
        if (settings.Blkverify && (children.Count != 2 || votes != 2))
            throw new OptionException("blkverify=on can only be set if there are exactly two files and vote-threshold is 2");
        if (settings.RewriteCorrupted && settings.Blkverify)
            throw new OptionException("rewrite-corrupted=on cannot be used with blkverify=on");

        var nodes = new List<(string Name, BlockNode Node)>();
        for (int i = 0; i < children.Count; i++)
        {
            string name = $"children.{i}";
            nodes.Add((name, context.OpenProbedChild(name, children[i])));
        }
        o.EnsureAllUsed(Name, isProtocol: false);
        return new QuorumNode(context.NodeName, context.Flags, nodes, settings);
    }

    /// <summary>
    /// The elements of <c>children</c> in index order (qdict_array_entries): a list, or a
    /// dictionary whose keys are exactly 0..N-1 (dotted options crumple to one); anything else is
    /// "Option children is not a valid array".
    /// </summary>
    private static List<OptionValue> ChildArray(OptionValue? value)
    {
        switch (value)
        {
            case null:
                return [];
            case OptionList list:
                return [.. list.Items];
            case OptionDict dict:
                var items = new List<OptionValue>();
                var byIndex = new Dictionary<int, OptionValue>();
                foreach (var (key, item) in dict.Entries)
                {
                    if (!int.TryParse(key, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int index)
                        || index.ToString(System.Globalization.CultureInfo.InvariantCulture) != key)
                        throw new OptionException("Option children is not a valid array");
                    byIndex[index] = item;
                }
                for (int i = 0; i < byIndex.Count; i++)
                {
                    if (!byIndex.TryGetValue(i, out var item)) throw new OptionException("Option children is not a valid array");
                    items.Add(item);
                }
                return items;
            default:
                throw new OptionException("Option children is not a valid array");
        }
    }
}

/// <summary>A quorum node's settings as validated by quorum_open.</summary>
/// <param name="Threshold">Votes a read's version (or successful writes) must reach.</param>
/// <param name="Fifo">read-pattern=fifo: read the first child, the next on failure, no vote.</param>
/// <param name="Blkverify">Two children that must read the same: a difference ends the process.</param>
/// <param name="RewriteCorrupted">Children outvoted in a read get the winning data written back.</param>
public sealed record QuorumSettings(int Threshold, bool Fifo, bool Blkverify, bool RewriteCorrupted);
