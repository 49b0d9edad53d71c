using System.Globalization;
using Vdisk.Cli.Common;
using Vdisk.Options;

namespace Vdisk.Cli.Img;

/// <summary>Shared pieces of the qemu-img verbs: <c>-o</c> option lists and size arguments.</summary>
internal static class ImgOptions
{
    /// <summary>QemuOpts' list syntax: key=value pairs separated by commas, ",," for a literal comma.</summary>
    public static List<KeyValuePair<string, string>> ParseList(IEnumerable<string> lists)
    {
        var result = new List<KeyValuePair<string, string>>();
        foreach (var list in lists)
        {
            var item = new System.Text.StringBuilder();
            var items = new List<string>();
            for (int i = 0; i < list.Length; i++)
            {
                if (list[i] == ',')
                {
                    if (i + 1 < list.Length && list[i + 1] == ',') { item.Append(','); i++; continue; }
                    items.Add(item.ToString());
                    item.Clear();
                    continue;
                }
                item.Append(list[i]);
            }
            items.Add(item.ToString());
            foreach (var it in items)
            {
                if (it.Length == 0) continue;
                int eq = it.IndexOf('=');
                result.Add(eq < 0 ? new(it, "on") : new(it[..eq], it[(eq + 1)..]));
            }
        }
        return result;
    }

    /// <summary>qemu-img's image size argument (k/M/G/T/P/E suffixes, bytes by default).</summary>
    public static bool TryParseSize(string text, out long size)
    {
        size = 0;
        if (!SizeParser.TryParse(text, out ulong value) || value > long.MaxValue) return false;
        size = (long)value;
        return true;
    }

    /// <summary>The two-line error qemu-img prints for a bad size.</summary>
    public static void InvalidSize()
    {
        Stdio.Error("Invalid image size specified. You may use k, M, G, T, P or E suffixes for");
        Stdio.Error("kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
    }

    /// <summary>on/off values of -o options.</summary>
    public static bool? ParseBool(string value) => NodeOptions.ParseBool(value);

    public static string Invariant(long v) => v.ToString(CultureInfo.InvariantCulture);
}
