using Vdisk.Options;

namespace Vdisk.Graph;

/// <summary>
/// A node's options as a parent's json: filename shows them (bs->full_open_options, as
/// bdrv_refresh_filename builds them): its own json: filename's, or its driver over its file
/// child's, or its driver and filename; a protocol known by its bare <c>driver://</c> name
/// (null-co) has only its driver.
/// </summary>
public static class NodeFullOptions
{
    /// <summary>The options of <paramref name="node"/>.</summary>
    public static OptionDict Of(BlockNode node)
    {
        if (JsonOptions.IsJsonFilename(node.Filename)) return JsonOptions.ParseFilename(node.Filename);
        var dict = new OptionDict();
        dict.Set("driver", node.DriverName);
        if (!node.IsProtocol && node.Children.Count == 1 && node.Children[0].Name == "file") dict.Set("file", Of(node.Children[0].Node));
        else if (!(node.IsProtocol && node.Filename == node.DriverName + "://")) dict.Set("filename", node.Filename);
        return dict;
    }
}
