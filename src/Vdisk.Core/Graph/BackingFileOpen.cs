using Vdisk.Locking;
using Vdisk.Native;
using Vdisk.Options;

namespace Vdisk.Graph;

/// <summary>
/// bdrv_open_backing_file's error wording, for every format that names a backing file: a
/// failure to open it reads "Could not open backing file: " and the cause, keeping the cause's
/// kind (errno, lock conflict, option error) so callers and exit codes treat it the same.
/// </summary>
public static class BackingFileOpen
{
    /// <summary>What QEMU puts before the cause.</summary>
    public const string ErrorPrefix = "Could not open backing file: ";

    /// <summary>
    /// bdrv_open_backing_file for a format node that names a backing file: <c>backing: null</c>
    /// opens none; a node name refers to an existing node; an options dict is completed with the
    /// stored name (relative to the image) and format; no option opens the stored name with the
    /// stored format. <paramref name="attach"/> hangs the opened node under the format node with
    /// the name it reports.
    /// </summary>
    public static void Open(NodeOpenContext context, BlockNode node, string? backingName, string? backingFormat,
        bool hasBackingOption, OptionValue? backingOption, Action<BlockNode, string?> attach)
    {
        switch (backingOption)
        {
            case OptionScalar { Kind: ScalarKind.Null }:
                return;
            case OptionScalar reference when hasBackingOption:
                var existing = context.Opener.FindNode(reference.Text)
                    ?? throw new OptionException($"{ErrorPrefix}Cannot find device='{reference.Text}' nor node-name='{reference.Text}'");
                attach(existing, existing.Filename);
                return;
            case OptionDict dict:
                var options = dict.Clone();
                string? full = null;
                if (!options.Contains("file") && !options.Contains("filename") && backingName is not null)
                {
                    // bdrv_get_full_backing_filename's error is the open's, without the backing file prefix.
                    string name = BackingPath.Resolve(node, backingName);
                    full = name;
                    Run(() => options.Set("file", ProtocolOptions(name)));
                }
                if (!options.Contains("driver") && backingFormat is not null) options.Set("driver", backingFormat);
                Run(() => attach(context.Opener.OpenBacking(context, options), full));
                return;
            case null when backingName is not null:
                string path = BackingPath.Resolve(node, backingName);
                OptionDict opts = null!;
                Run(() => opts = NodeOptionsFor(path, backingFormat));
                Run(() => attach(context.Opener.OpenBacking(context, opts), path));
                return;
        }
    }

    /// <summary>
    /// The options of a backing node named <paramref name="name"/> (resolved) with the format
    /// <paramref name="format"/> (null: probe): a <c>json:</c> name describes the node itself
    /// (its own driver wins over the format), any other name is its protocol node's filename.
    /// </summary>
    public static OptionDict NodeOptionsFor(string name, string? format)
    {
        OptionDict options;
        if (JsonOptions.IsJsonFilename(name))
        {
            options = OptionTree.Crumple(JsonOptions.ParseFilename(name));
        }
        else
        {
            options = new OptionDict();
            options.Set("file", ProtocolOptions(name));
        }
        if (format is not null && !options.Contains("driver")) options.Set("driver", format);
        return options;
    }

    /// <summary>
    /// The protocol node's options for a backing file name: QEMU opens the stored name as a
    /// filename (bdrv_open_inherit with BDRV_O_PROTOCOL), so a protocol prefix
    /// (<c>nbd+unix:///exp?socket=S</c>, <c>nbd://host/exp</c>) chooses and configures the
    /// protocol driver; anything else is a file.
    /// </summary>
    public static OptionDict ProtocolOptions(string filename)
    {
        var file = new OptionDict();
        BlockDrivers.FillProtocolOptions(file, filename);
        if (!file.Contains("driver")) file.Set("driver", Drivers.File.FileDriver.ProtocolFor(filename));
        return file;
    }

    /// <summary>Runs <paramref name="open"/>, prefixing its failure as QEMU does.</summary>
    public static void Run(Action open)
    {
        try
        {
            open();
        }
        catch (NativeIOException e)
        {
            throw new NativeIOException(e.Errno, ErrorPrefix + e.Message, e.Path);
        }
        catch (LockConflictException e)
        {
            throw new LockConflictException(ErrorPrefix + e.Message, e.Filename, e.Offset, e.FromTest, e.Errno);
        }
        catch (OptionException e)
        {
            throw new OptionException(ErrorPrefix + e.Message);
        }
        catch (IOException e)
        {
            // A format's own damage report (bad header, bad descriptor...).
            throw new IOException(ErrorPrefix + e.Message, e);
        }
    }
}
