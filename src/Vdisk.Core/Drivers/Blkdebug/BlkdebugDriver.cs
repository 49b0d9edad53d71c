using Vdisk.Graph;
using Vdisk.Native;
using Vdisk.Options;
using Vdisk.Permissions;

namespace Vdisk.Drivers.Blkdebug;

/// <summary>
/// QEMU's block/blkdebug.c: a filter over its <c>image</c> child that injects I/O errors and
/// suspends requests at the events formats announce, and imposes request limits. Filenames
/// <c>blkdebug:[CONFIG]:IMAGE</c>; options <c>config</c>, <c>image</c>, <c>align</c>,
/// <c>max-transfer</c>, <c>opt-write-zero</c>, <c>max-write-zero</c>, <c>opt-discard</c>,
/// <c>max-discard</c>, <c>inject-error</c>, <c>set-state</c>, <c>take-child-perms</c>,
/// <c>unshare-child-perms</c>.
/// </summary>
public sealed class BlkdebugDriver : IBlockDriver, IProtocolFilenameParser
{
    /// <inheritdoc />
    public string Name => "blkdebug";

    /// <inheritdoc />
    public bool IsProtocol => true;

    /// <inheritdoc />
    public IReadOnlyList<string> Protocols => ["blkdebug"];

    private static readonly string[] s_limitKeys = ["align", "max-transfer", "opt-write-zero", "max-write-zero", "opt-discard", "max-discard"];

    /// <summary>
    /// blkdebug_parse_filename: <c>blkdebug:CONFIG:IMAGE</c> (CONFIG may be empty); the image
    /// part is the child's filename.
    /// </summary>
    public void ParseFilename(string filename, OptionDict options)
    {
        var (config, image) = SplitFilename(filename);
        if (config is not null) options.Set("config", config);
        options.Set("image.filename", image);
    }

    /// <summary>The config file and image parts of a filename (no "blkdebug:" prefix: all image).</summary>
    /// <exception cref="OptionException">A "blkdebug:" filename without the second colon.</exception>
    public static (string? Config, string Image) SplitFilename(string filename)
    {
        const string prefix = "blkdebug:";
        if (!filename.StartsWith(prefix, StringComparison.Ordinal)) return (null, filename);
        string rest = filename[prefix.Length..];
        int colon = rest.IndexOf(':');
        if (colon < 0) throw new OptionException("blkdebug requires both config file and image path");
        return (colon == 0 ? null : rest[..colon], rest[(colon + 1)..]);
    }

    /// <inheritdoc />
    public BlockNode Open(NodeOpenContext context)
    {
        var o = context.Options;
        var given = o.Dictionary.Clone();
        // A filename given as an option is parsed like one on the command line.
        string? xImage = o.TakeString("x-image");
        if (o.TakeString("filename") is { } filename)
        {
            var (cfg, image) = SplitFilename(filename);
            if (cfg is not null && !o.Has("config")) o.Dictionary.Set("config", cfg);
            xImage = image;
        }
        string? config = o.TakeString("config");
        var limits = new Dictionary<string, ulong>();
        foreach (string key in s_limitKeys)
        {
            if (o.TakeSize(key) is { } v) limits[key] = v;
        }
        var injectError = o.Take("inject-error");
        var setState = o.Take("set-state");
        var take = TakePermissions(o, "take-child-perms");
        var unshare = TakePermissions(o, "unshare-child-perms");

        // read_config: the file's sections, then those given as options.
        var sections = new List<BlkdebugSection>();
        if (config is not null)
        {
            string text;
            try
            {
                text = HostFile.ReadAllText(config);
            }
            catch (NativeIOException e)
            {
                throw new OptionException($"Could not read blkdebug config file: {NativeIOException.Describe(e.Errno)}");
            }
            sections.AddRange(BlkdebugConfig.ParseFile(text));
        }
        if (injectError is not null) sections.AddRange(BlkdebugConfig.FromOption("inject-error", injectError));
        if (setState is not null) sections.AddRange(BlkdebugConfig.FromOption("set-state", setState));
        var rules = new BlkdebugRuleSet();
        BlkdebugConfig.AddRules(rules, sections);

        if (xImage is not null && o.Dictionary["image"] is null)
        {
            var imageDict = new OptionDict();
            imageDict.Set("filename", xImage);
            o.Dictionary.Set("image", imageDict);
        }
        else if (xImage is not null && o.Dictionary["image"] is OptionDict imageOptions && !imageOptions.Contains("filename"))
        {
            imageOptions.Set("filename", xImage);
        }
        var child = context.OpenChild("image");
        o.EnsureAllUsed(Name, isProtocol: true);
        var checkedLimits = BlkdebugLimits.Validate(limits);
        return new BlkdebugNode(context.NodeName, context.Flags, child, rules, checkedLimits, take, unshare, config,
            ExactFilenameAllowed(given));
    }

    // blkdebug_refresh_filename: blkdebug:CONFIG:IMAGE only stands for the node when no option
    // but the config file and the image was given.
    private static bool ExactFilenameAllowed(OptionDict given) =>
        given.Entries.All(e => e.Key is "config" or "image" or "x-image" or "driver" or "filename"
            or "node-name" or "read-only" or "auto-read-only" or "force-share" or "discard" or "detect-zeroes" or "cache");

    private static BlockPermission TakePermissions(NodeOptions o, string key)
    {
        var value = o.Take(key);
        if (value is null) return BlockPermission.None;
        IEnumerable<OptionValue> items = value switch
        {
            OptionList list => list.Items,
            OptionDict dict => dict.Entries.Select(e => e.Value),
            _ => throw new OptionException($"Invalid parameter type for '{key}', expected: array"),
        };
        var perms = BlockPermission.None;
        foreach (var item in items)
        {
            string name = (item as OptionScalar)?.Text ?? throw new OptionException($"Invalid parameter type for '{key}', expected: string");
            var bit = Enumerable.Range(0, BlockPermissions.BitCount).Select(BlockPermissions.FromBit)
                .FirstOrDefault(b => BlockPermissions.QapiName(b) == name);
            if (bit == BlockPermission.None) throw new OptionException($"Parameter '{key}' does not accept value '{name}'");
            perms |= bit;
        }
        return perms;
    }
}

/// <summary>blkdebug's request limits, checked as blkdebug_open checks them (0: not set).</summary>
/// <param name="Align">request_alignment.</param>
/// <param name="MaxTransfer">max_transfer.</param>
/// <param name="OptWriteZero">pwrite_zeroes_alignment.</param>
/// <param name="MaxWriteZero">max_pwrite_zeroes.</param>
/// <param name="OptDiscard">pdiscard_alignment.</param>
/// <param name="MaxDiscard">max_pdiscard.</param>
public sealed record BlkdebugLimits(long Align, long MaxTransfer, long OptWriteZero, long MaxWriteZero, long OptDiscard, long MaxDiscard)
{
    /// <summary>Checks the limits given (by option name) against each other.</summary>
    /// <exception cref="OptionException">QEMU's "Cannot meet constraints with KEY VALUE".</exception>
    public static BlkdebugLimits Validate(IReadOnlyDictionary<string, ulong> given)
    {
        ulong Get(string key) => given.TryGetValue(key, out ulong v) ? v : 0;
        static OptionException Refuse(string key, ulong value) => new($"Cannot meet constraints with {key} {value}");
        ulong align = Get("align");
        if (align != 0 && (align >= int.MaxValue || (align & (align - 1)) != 0)) throw Refuse("align", align);
        // The file below accepts any alignment (vdisk's file nodes split O_DIRECT requests themselves).
        ulong effective = Math.Max(align, 1);
        ulong Checked(string key, ulong multipleOf)
        {
            ulong v = Get(key);
            if (v != 0 && (v >= int.MaxValue || v % multipleOf != 0)) throw Refuse(key, v);
            return v;
        }
        ulong maxTransfer = Checked("max-transfer", effective);
        ulong optWriteZero = Checked("opt-write-zero", effective);
        ulong maxWriteZero = Checked("max-write-zero", Math.Max(optWriteZero, effective));
        ulong optDiscard = Checked("opt-discard", effective);
        ulong maxDiscard = Checked("max-discard", Math.Max(optDiscard, effective));
        return new((long)align, (long)maxTransfer, (long)optWriteZero, (long)maxWriteZero, (long)optDiscard, (long)maxDiscard);
    }
}
