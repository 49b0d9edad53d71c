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
        if (backing.StartsWith('/') || backing.Length == 0) return backing;
        int colon = backing.IndexOf(':');
        int slash = backing.IndexOf('/');
        if (colon > 0 && (slash < 0 || colon < slash)) return backing;
        int lastSlash = imageFilename.LastIndexOf('/');
        return lastSlash < 0 ? backing : imageFilename[..(lastSlash + 1)] + backing;
    }
}
