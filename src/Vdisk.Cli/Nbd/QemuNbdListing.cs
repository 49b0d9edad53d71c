using System.Globalization;
using System.Text;

namespace Vdisk.Cli.Nbd;

/// <summary>The text <c>qemu-nbd --list</c> prints for a server's exports (qemu_nbd_client_list).</summary>
internal static class QemuNbdListing
{
    /// <summary>Transmission flag names by bit, as qemu-nbd names them; bit 0 (has flags) is not printed.</summary>
    private static readonly string?[] s_flagNames =
    [
        null, "readonly", "flush", "fua", "rotational", "trim", "zeroes", "df", "multi", "resize", "cache", "fast-zero",
    ];

    /// <summary>NBD_FLAG_HAS_FLAGS: the server described the export.</summary>
    private const int HasFlags = 1;

    public static string Format(IReadOnlyList<NbdListedExport> exports)
    {
        var text = new StringBuilder();
        var c = CultureInfo.InvariantCulture;
        text.Append(c, $"exports available: {exports.Count}\n");
        foreach (var export in exports)
        {
            text.Append(c, $" export: '{export.Name}'\n");
            if (!string.IsNullOrEmpty(export.Description)) text.Append(c, $"  description: {export.Description}\n");
            if ((export.Flags & HasFlags) != 0)
            {
                text.Append(c, $"  size:  {export.Size}\n");
                text.Append(c, $"  flags: 0x{export.Flags:x} (");
                for (int bit = 0; bit < s_flagNames.Length; bit++)
                {
                    if (s_flagNames[bit] is { } name && (export.Flags & (1 << bit)) != 0) text.Append(' ').Append(name);
                }
                text.Append(" )\n");
            }
            if (export.MinBlock != 0)
            {
                text.Append(c, $"  min block: {export.MinBlock}\n");
                text.Append(c, $"  opt block: {export.OptBlock}\n");
                text.Append(c, $"  max block: {export.MaxBlock}\n");
            }
            if (export.MetaContexts.Count > 0)
            {
                text.Append(c, $"  available meta contexts: {export.MetaContexts.Count}\n");
                foreach (var context in export.MetaContexts) text.Append(c, $"   {context}\n");
            }
        }
        return text.ToString();
    }
}
