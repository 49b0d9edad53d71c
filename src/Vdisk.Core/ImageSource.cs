using Vdisk.Options;

namespace Vdisk;

/// <summary>
/// Which image to open, in one of QEMU's three spellings: a filename with an optional format
/// (<c>-f raw disk.img</c>), a <c>json:{...}</c> filename, or an option string
/// (<c>--image-opts driver=raw,file.filename=disk.img,file.locking=off</c>).
/// </summary>
public sealed class ImageSource
{
    private ImageSource(string? filename, string? format, OptionDict? options, OptionDict? extra = null)
    {
        Filename = filename;
        Format = format;
        Options = options;
        ExtraOptions = extra;
    }

    /// <summary>Options given alongside a filename (qemu-io's <c>open -o</c>), merged over it.</summary>
    public OptionDict? ExtraOptions { get; }

    /// <summary>The filename as given (may be a <c>json:</c> filename), or null for option strings.</summary>
    public string? Filename { get; }

    /// <summary>The format given with <c>-f</c>, or null to probe.</summary>
    public string? Format { get; }

    /// <summary>The option tree, for option strings.</summary>
    public OptionDict? Options { get; }

    /// <summary>A filename, optionally with a format; <c>json:</c> filenames are accepted.</summary>
    public static ImageSource FromFile(string filename, string? format = null) => new(filename, format, null);

    /// <summary>
    /// A filename plus options that refine it (<c>open -o driver=raw,file.locking=off disk.img</c>);
    /// a <c>driver</c> option acts as the format.
    /// </summary>
    public static ImageSource FromFile(string filename, OptionDict extraOptions)
    {
        var extra = OptionTree.Crumple(extraOptions.Clone());
        string? format = (extra["driver"] as OptionScalar)?.Text;
        extra.Remove("driver");
        return new(filename, format, null, extra);
    }

    /// <summary>An <c>--image-opts</c> string (QemuOpts rules: last value of a repeated key wins).</summary>
    public static ImageSource FromImageOptions(string options, Action<string>? warn = null) =>
        new(null, null, KeyValParser.Parse(options, KeyValDialect.QemuOpts, warn: warn));

    /// <summary>An option tree (BlockdevOptions), as from JSON or QMP.</summary>
    public static ImageSource FromOptions(OptionDict options) => new(null, null, options);

    /// <summary>
    /// True when the option string says <c>force-share=off</c> explicitly, which a request to
    /// share everything (<c>-U</c>) contradicts; each tool words that conflict its own way.
    /// </summary>
    public bool RefusesForceShare => RefusesForceShareIn(Options);

    internal static bool RefusesForceShareIn(OptionDict? options) =>
        options?["force-share"] is OptionScalar fs && NodeOptions.ParseBool(fs.Text) == false;

    /// <summary>The name QEMU's tools show in "can't open device NAME".</summary>
    public string? DisplayName => Filename;

    /// <summary>Builds the option tree for the top node.</summary>
    internal OptionDict BuildOptions()
    {
        if (Options is not null) return OptionTree.Crumple(Options.Clone());
        var filename = Filename!;
        OptionDict dict;
        if (JsonOptions.IsJsonFilename(filename))
        {
            dict = OptionTree.Crumple(JsonOptions.ParseFilename(filename));
        }
        else
        {
            dict = new OptionDict();
            var formatDriver = Format is null ? null : Graph.BlockDrivers.Find(Format);
            if (formatDriver is { IsProtocol: true })
            {
                // "-f nbd URL", "-f file NAME": the filename belongs to the top node itself.
                Graph.BlockDrivers.FillProtocolOptions(dict, filename, formatDriver);
            }
            else
            {
                var file = new OptionDict();
                Graph.BlockDrivers.FillProtocolOptions(file, filename);
                dict.Set("file", file);
            }
        }
        // A format given beside the filename (-f, or driver= among the options) wins over a
        // json: filename's own driver, as qdict_join(options, json_options, false) keeps it.
        if (Format is not null) dict.Set("driver", Format);
        if (ExtraOptions is not null) Merge(dict, ExtraOptions);
        return dict;
    }

    private static void Merge(OptionDict into, OptionDict from)
    {
        foreach (var (key, value) in from.Entries)
        {
            if (value is OptionDict d && into[key] is OptionDict existing) Merge(existing, d);
            else into.Set(key, value is OptionDict nested ? nested.Clone() : value);
        }
    }

    /// <inheritdoc />
    public override string ToString() => Filename ?? Options?.ToString() ?? "";
}

/// <summary>Helpers over option trees.</summary>
public static class OptionTree
{
    /// <summary>
    /// qdict_crumple: turns dotted keys (<c>"file.filename"</c>) into nested dictionaries, so JSON
    /// options may use either spelling.
    /// </summary>
    public static OptionDict Crumple(OptionDict dict)
    {
        var result = new OptionDict();
        foreach (var (key, value) in dict.Entries)
        {
            var v = value is OptionDict d ? Crumple(d) : value;
            string[] parts = key.Split('.');
            var current = result;
            for (int i = 0; i < parts.Length - 1; i++)
            {
                if (current[parts[i]] is OptionDict next)
                {
                    current = next;
                }
                else if (current[parts[i]] is null)
                {
                    next = new OptionDict();
                    current.Set(parts[i], next);
                    current = next;
                }
                else
                {
                    throw new OptionException("Cannot reference an existing block device with additional options or a new filename");
                }
            }
            string leaf = parts[^1];
            if (current[leaf] is OptionDict existing && v is OptionDict incoming)
            {
                foreach (var (k, x) in incoming.Entries) existing.Set(k, x);
            }
            else if (current[leaf] is OptionDict && v is not OptionDict)
            {
                throw new OptionException("Cannot reference an existing block device with additional options or a new filename");
            }
            else
            {
                current.Set(leaf, v);
            }
        }
        return result;
    }
}
