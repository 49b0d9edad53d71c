using Vdisk.Graph;
using Vdisk.Options;

namespace Vdisk.Drivers.Blkverify;

/// <summary>
/// QEMU's block/blkverify.c, a debugging filter: every read goes to a raw reference copy and to
/// the image under test, and the process ends at the first difference. Filenames
/// <c>blkverify:RAW:TEST</c> (a filename without the prefix names the test image); options
/// <c>raw</c> (the reference, opened as a protocol) and <c>test</c> (the image, its format probed
/// when not given), and the internal <c>x-raw</c>/<c>x-image</c> filenames.
/// </summary>
public sealed class BlkverifyDriver : IBlockDriver, IProtocolFilenameParser
{
    private const string Prefix = "blkverify:";

    /// <inheritdoc />
    public string Name => "blkverify";

    /// <inheritdoc />
    public bool IsProtocol => true;

    /// <inheritdoc />
    public IReadOnlyList<string> Protocols => ["blkverify"];

    /// <inheritdoc />
    public void ParseFilename(string filename, OptionDict options)
    {
        var (raw, image) = SplitFilename(filename);
        if (raw is not null) options.Set("x-raw", raw);
        options.Set("x-image", image);
    }

    /// <summary>blkverify_parse_filename: <c>blkverify:RAW:TEST</c>, or only the test image without the prefix.</summary>
    /// <exception cref="OptionException">A "blkverify:" filename without the second colon.</exception>
    public static (string? Raw, string Image) SplitFilename(string filename)
    {
        if (!filename.StartsWith(Prefix, StringComparison.Ordinal)) return (null, filename);
        string rest = filename[Prefix.Length..];
        int colon = rest.IndexOf(':');
        if (colon < 0) throw new OptionException("blkverify requires raw copy and original image path");
        return (rest[..colon], rest[(colon + 1)..]);
    }

    /// <inheritdoc />
    public BlockNode Open(NodeOpenContext context)
    {
        var o = context.Options;
        string? xRaw = o.TakeString("x-raw");
        string? xImage = o.TakeString("x-image");
        if (o.TakeString("filename") is { } filename)
        {
            var (raw, image) = SplitFilename(filename);
            xRaw ??= raw;
            xImage = image;
        }
        SetChildFilename(o, "raw", xRaw);
        SetChildFilename(o, "test", xImage);
        // As blkverify_open: the reference first (a protocol node), then the image under test.
        var rawNode = context.OpenChild("raw");
        var test = context.OpenProbedChild("test");
        o.EnsureAllUsed(Name, isProtocol: true);
        return new BlkverifyNode(context.NodeName, context.Flags, rawNode, test);
    }

    /// <summary>bdrv_open_child's filename argument: the child's options get it unless they name a node.</summary>
    private static void SetChildFilename(NodeOptions o, string child, string? filename)
    {
        if (filename is null) return;
        switch (o.Dictionary[child])
        {
            case null:
                var dict = new OptionDict();
                dict.Set("filename", filename);
                o.Dictionary.Set(child, dict);
                break;
            case OptionDict given when !given.Contains("filename"):
                given.Set("filename", filename);
                break;
        }
    }
}
