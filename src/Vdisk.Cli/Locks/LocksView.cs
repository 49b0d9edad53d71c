using System.Globalization;
using System.Text;
using Vdisk.Inspection;
using Vdisk.Permissions;

namespace Vdisk.Cli.Locks;

/// <summary>The human form of <c>vdisk locks</c>: per image, a table of holders, then a verdict per mode.</summary>
internal static class LocksView
{
    private static readonly string[] Header = ["PID", "FD", "TYPE", "BYTES", "HOLDS", "REFUSES", "COMMAND"];

    /// <summary>Writes the images' tables and verdicts, each judged for the format <paramref name="formatOf"/> gives.</summary>
    public static void Write(TextWriter w, IReadOnlyList<ImageLocks> images, IReadOnlyList<AccessMode> modes, Func<ImageLocks, string> formatOf)
    {
        bool first = true;
        foreach (var image in images)
        {
            if (!first) w.Write('\n');
            first = false;
            WriteImage(w, image, modes, formatOf(image));
        }
    }

    private static void WriteImage(TextWriter w, ImageLocks image, IReadOnlyList<AccessMode> modes, string format)
    {
        if (image.Holders.Count == 0)
        {
            w.Write($"{image.Path}: no locks\n");
            return;
        }
        w.Write($"{image.Path}: {image.Holders.Count} holder(s)\n");
        var rows = new List<string[]> { Header };
        var notes = new Dictionary<int, List<string>>();
        foreach (var h in image.Holders)
        {
            rows.Add(
            [
                h.Process?.Pid.ToString(CultureInfo.InvariantCulture) ?? "?",
                h.Descriptor?.ToString(CultureInfo.InvariantCulture) ?? (h.Kind == LockHolderKind.Unknown ? "?" : "-"),
                h.Kind switch
                {
                    LockHolderKind.OpenFileDescription => "OFD",
                    LockHolderKind.Posix => "POSIX",
                    LockHolderKind.Flock => "FLOCK",
                    _ => "OFD",
                },
                Bytes(h),
                h.ConflictsWithQemu ? Permissions(h.Holds) : "(none: flock)",
                h.ConflictsWithQemu ? Permissions(h.Refuses) : "(none: flock)",
                h.Kind == LockHolderKind.Unknown ? "(unknown)" : h.Process?.CommandLine ?? h.Process?.Command ?? "(unreadable)",
            ]);
            var lines = new List<string>();
            foreach (var s in h.SharedWith) lines.Add($"also open in {s.Process} as fd {s.Descriptor}");
            if (h.UnknownReason is not null) lines.Add(h.UnknownReason);
            if (lines.Count > 0) notes[rows.Count - 1] = lines;
        }
        var widths = new int[Header.Length];
        foreach (var row in rows)
            for (int c = 0; c < row.Length - 1; c++) widths[c] = Math.Max(widths[c], row[c].Length);
        for (int r = 0; r < rows.Count; r++)
        {
            var sb = new StringBuilder("  ");
            for (int c = 0; c < rows[r].Length; c++)
            {
                sb.Append(c < rows[r].Length - 1 ? rows[r][c].PadRight(widths[c] + 2) : rows[r][c]);
            }
            w.Write(sb.ToString().TrimEnd() + "\n");
            if (notes.TryGetValue(r, out var lines))
                foreach (var line in lines) w.Write($"      {line}\n");
        }
        foreach (var mode in modes)
        {
            var v = image.Verdict(mode, format);
            string label = $"{AccessModes.Name(mode)} ({AccessModes.Tool(mode)}{(format == "raw" ? "" : " -f " + format)})";
            w.Write(v.Admitted
                ? $"  {label}: admitted\n"
                : $"  {label}: blocked: {v.Error}. {v.Reason}\n");
        }
    }

    private static string Permissions(BlockPermission p) => p == BlockPermission.None ? "-" : BlockPermissions.Describe(p);

    /// <summary>The locked ranges, e.g. <c>100-101,103,201</c>; exclusive ranges marked <c>(excl)</c>.</summary>
    private static string Bytes(LockHolder h)
    {
        if (h.Kind == LockHolderKind.Flock) return "whole file" + (h.Locks.Any(l => l.Exclusive) ? " (excl)" : "");
        return string.Join(",", h.Locks.OrderBy(l => l.Start).Select(l =>
        {
            string end = l.End == long.MaxValue ? "EOF" : l.End.ToString(CultureInfo.InvariantCulture);
            string range = l.Start == l.End ? end : $"{l.Start.ToString(CultureInfo.InvariantCulture)}-{end}";
            return l.Exclusive ? range + "(excl)" : range;
        }));
    }
}
