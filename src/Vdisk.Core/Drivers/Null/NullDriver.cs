using System.Text;
using Vdisk.Graph;
using Vdisk.Options;
using Vdisk.Output;

namespace Vdisk.Drivers.Null;

/// <summary>
/// QEMU's block/null.c drivers <c>null-co</c> and <c>null-aio</c> (the two differ only in how QEMU
/// completes requests): a protocol with no storage behind it. Options: <c>size</c> (default 1 GiB),
/// <c>latency-ns</c>, <c>read-zeroes</c>; the only filename it accepts is <c>null-co://</c>
/// (or <c>null-aio://</c>).
/// </summary>
public sealed class NullDriver(string name) : IBlockDriver, IProtocolFilenameParser
{
    /// <summary>The size a null node has without a <c>size</c> option.</summary>
    public const long DefaultSize = 1L << 30;

    /// <inheritdoc />
    public string Name => name;

    /// <inheritdoc />
    public bool IsProtocol => true;

    /// <inheritdoc />
    public IReadOnlyList<string> Protocols => [name];

    private string OwnFilename => name + "://";

    /// <summary>null_co_parse_filename: the filename carries no options, and only one spelling is allowed.</summary>
    public void ParseFilename(string filename, OptionDict options)
    {
        if (filename != OwnFilename)
            throw new OptionException($"The only allowed filename for this driver is '{OwnFilename}'");
    }

    /// <inheritdoc />
    public BlockNode Open(NodeOpenContext context)
    {
        var o = context.Options;
        // bdrv_refresh_filename keeps the strong runtime options (size, read-zeroes) as given.
        var strong = new QemuJsonObject().Add("driver", new OptionScalar(name));
        foreach (var key in new[] { "size", "read-zeroes" })
        {
            if (o.Dictionary[key] is { } value) strong.Add(key, value);
        }
        ulong size = o.TakeSize("size") ?? DefaultSize;
        long latencyNs = unchecked((long)(o.TakeNumber("latency-ns") ?? 0));
        bool readZeroes = o.TakeBool("read-zeroes") ?? false;
        o.EnsureAllUsed(Name, isProtocol: true);
        if (latencyNs < 0) throw new OptionException("latency-ns is invalid");
        string filename = strong.Members.Count == 1 ? OwnFilename : JsonOptions.Prefix + CompactJson(strong);
        return new NullNode(context.NodeName, context.Flags, name, filename, (long)Math.Min(size, long.MaxValue), latencyNs, readZeroes);
    }

    /// <summary>qobject_to_json of a flat QDict: QDict order, <c>", "</c> and <c>": "</c> separators.</summary>
    private static string CompactJson(QemuJsonObject dict)
    {
        var sb = new StringBuilder("{");
        bool first = true;
        foreach (var (key, value) in dict.OrderedMembers)
        {
            if (!first) sb.Append(", ");
            first = false;
            QemuJsonText.WriteQuoted(sb, key);
            sb.Append(": ");
            ((OptionValue)value!).WriteJson(sb);
        }
        return sb.Append('}').ToString();
    }
}
