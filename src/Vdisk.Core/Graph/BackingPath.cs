using Vdisk.Native;

namespace Vdisk.Graph;

/// <summary>How an image's backing file name is found on disk (block.c's path_combine).</summary>
public static class BackingPath
{
    /// <summary>
    /// A relative backing name is relative to the directory of the image that names it;
    /// absolute names and protocol names (<c>nbd:...</c>) are kept.
    /// </summary>
    public static string Combine(string imageFilename, string backing)
    {
        if (!IsRelative(backing)) return backing;
        int lastSlash = imageFilename.LastIndexOf('/');
        return lastSlash < 0 ? backing : imageFilename[..(lastSlash + 1)] + backing;
    }

    /// <summary>
    /// bdrv_make_absolute_filename: <paramref name="backing"/> as <paramref name="node"/> resolves
    /// it; a relative name under a node without a directory (quorum, blkverify, or a bottom node
    /// known only by a json: filename) cannot be resolved.
    /// </summary>
    /// <exception cref="NativeIOException">EINVAL "Cannot generate a base directory for DRIVER nodes".</exception>
    public static string Resolve(BlockNode node, string backing) =>
        TryResolve(node, backing) ?? throw new NativeIOException(Errno.EINVAL, $"Cannot generate a base directory for {node.DirnameDriver} nodes");

    /// <summary><see cref="Resolve"/>, or null where it would fail (qemu-img info: "cannot determine actual path").</summary>
    public static string? TryResolve(BlockNode node, string backing)
    {
        if (!IsRelative(backing)) return backing;
        return node.PathBase is { } path ? Combine(path, backing) : null;
    }

    /// <summary>Neither absolute nor a protocol name (<c>nbd:...</c>): resolved against a directory.</summary>
    private static bool IsRelative(string backing)
    {
        if (backing.StartsWith('/') || backing.Length == 0) return false;
        int colon = backing.IndexOf(':');
        int slash = backing.IndexOf('/');
        return !(colon > 0 && (slash < 0 || colon < slash));
    }
}
