using Vdisk.Drivers.File;
using Vdisk.Graph;
using Vdisk.Locking;
using Vdisk.Native;
using Vdisk.Options;
using Vdisk.Permissions;

namespace Vdisk.Drivers.Qcow2;

/// <summary>
/// Options of the <c>qcow2</c> format (file, backing, lazy-refcounts, cache sizes...) and the
/// opening of its backing chain: <c>backing</c> may name a node, give a nested option
/// dictionary, or be null for none; otherwise the header's backing file is opened read-only,
/// relative to the image's directory, with the format from the header (probed if absent).
/// </summary>
public sealed class Qcow2Driver : IBlockDriver
{
    [ThreadStatic] private static List<(FileIdentity? Id, string Name)>? t_chain;

    /// <inheritdoc />
    public string Name => "qcow2";

    /// <inheritdoc />
    public bool IsProtocol => false;

    private static readonly string[] IgnoredOptions =
    [
        "lazy-refcounts", "pass-discard-request", "pass-discard-snapshot", "pass-discard-other", "overlap-check",
        "cache-size", "l2-cache-size", "l2-cache-entry-size", "refcount-cache-size", "cache-clean-interval", "encrypt",
    ];

    /// <inheritdoc />
    public BlockNode Open(NodeOpenContext context)
    {
        var o = context.Options;
        foreach (var key in IgnoredOptions) o.Take(key);
        if (o.TakeString("data-file") is not null)
            throw new OptionException("'data-file' can only be set for images with an external data file");
        bool hasBackingOption = o.Has("backing");
        var backingOption = o.Take("backing");
        var file = context.OpenChild("file");
        o.EnsureAllUsed(Name, isProtocol: false);

        var node = Qcow2Node.OpenAsync(context.NodeName, context.Flags, context.OpenFlags, file).GetAwaiter().GetResult();
        if ((context.OpenFlags & OpenFlags.NoBacking) != 0) return node;

        var identity = (file as FileNode)?.Identity;
        var chain = t_chain ??= new();
        if (chain.Any(c => identity is not null ? c.Id == identity : c.Name == file.Filename))
            throw new NativeIOException(Errno.ELOOP, $"Backing file '{chain[^1].Name}' creates an infinite loop");
        chain.Add((identity, file.Filename));
        try
        {
            OpenBacking(context, node, hasBackingOption, backingOption);
        }
        catch
        {
            node.CloseAsync().AsTask().GetAwaiter().GetResult();
            throw;
        }
        finally
        {
            chain.RemoveAt(chain.Count - 1);
        }
        return node;
    }

    private static void OpenBacking(NodeOpenContext context, Qcow2Node node, bool hasBackingOption, OptionValue? backingOption)
    {
        string? backingName = node.Header.BackingFile;
        switch (backingOption)
        {
            case OptionScalar { Kind: ScalarKind.Null }:
                return;
            case OptionScalar reference when hasBackingOption:
                var existing = context.Opener.FindNode(reference.Text)
                    ?? throw new OptionException($"Could not open backing file: Cannot find device='{reference.Text}' nor node-name='{reference.Text}'");
                node.AttachBacking(existing, existing.Filename);
                return;
            case OptionDict dict:
                var options = dict.Clone();
                string? full = null;
                if (!options.Contains("file") && !options.Contains("filename") && backingName is not null)
                {
                    full = CombineBackingPath(node.Filename, backingName);
                    options.Set("filename", full);
                }
                if (!options.Contains("driver") && node.Header.BackingFormat is { } fmt) options.Set("driver", fmt);
                Wrapped(() => node.AttachBacking(context.Opener.OpenBacking(context, options), full));
                return;
            case null when backingName is not null:
                string path = CombineBackingPath(node.Filename, backingName);
                var opts = new OptionDict();
                if (node.Header.BackingFormat is { } format) opts.Set("driver", format);
                var fileOpts = new OptionDict();
                fileOpts.Set("driver", "file");
                fileOpts.Set("filename", path);
                opts.Set("file", fileOpts);
                Wrapped(() => node.AttachBacking(context.Opener.OpenBacking(context, opts), path));
                return;
        }
    }

    /// <summary>Opens and attaches a backing file, prefixing failures as bdrv_open_backing_file does.</summary>
    private static void Wrapped(Action open)
    {
        const string prefix = "Could not open backing file: ";
        try
        {
            open();
        }
        catch (NativeIOException e)
        {
            throw new NativeIOException(e.Errno, prefix + e.Message, e.Path);
        }
        catch (LockConflictException e)
        {
            throw new LockConflictException(prefix + e.Message, e.Filename, e.Offset, e.FromTest, e.Errno);
        }
        catch (Qcow2FormatException e)
        {
            throw new Qcow2FormatException(prefix + e.Message);
        }
        catch (OptionException e)
        {
            throw new OptionException(prefix + e.Message);
        }
    }

    /// <summary>
    /// QEMU's path_combine: a relative backing name is relative to the directory of the image
    /// that names it; absolute names and protocol names (<c>nbd:...</c>) are kept.
    /// </summary>
    public static string CombineBackingPath(string imageFilename, string backing)
    {
        if (backing.StartsWith('/') || backing.Length == 0) return backing;
        int colon = backing.IndexOf(':');
        int slash = backing.IndexOf('/');
        if (colon > 0 && (slash < 0 || colon < slash)) return backing;
        int lastSlash = imageFilename.LastIndexOf('/');
        return lastSlash < 0 ? backing : imageFilename[..(lastSlash + 1)] + backing;
    }
}
