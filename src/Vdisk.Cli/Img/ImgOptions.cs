using System.Globalization;
using Vdisk.Cli.Common;
using Vdisk.Options;

namespace Vdisk.Cli.Img;

/// <summary>Shared pieces of the qemu-img verbs: <c>-o</c> option lists, numbers and sizes, formats.</summary>
internal static class ImgOptions
{
    /// <summary>
    /// accumulate_options: each <c>-o</c> argument must be a valid option list ("Invalid option
    /// list: ..." otherwise); they are joined with commas. Null when none was given.
    /// </summary>
    public static bool TryAccumulate(IEnumerable<string>? lists, out string? joined)
    {
        joined = null;
        foreach (var list in lists ?? [])
        {
            if (!QemuOpts.IsValidOptionList(list))
            {
                Stdio.Error($"Invalid option list: {list}");
                return false;
            }
            joined = joined is null ? list : joined + "," + list;
        }
        return true;
    }

    /// <summary>
    /// cvtnum_full: a size with qemu_strtosz's suffixes between <paramref name="min"/> and
    /// <paramref name="max"/>; prints qemu-img's error (naming <paramref name="name"/>) otherwise.
    /// </summary>
    public static bool TryCvtNum(string name, string text, out long value, long min = 0, long max = long.MaxValue)
    {
        value = 0;
        var status = SizeParser.Parse(text, out ulong parsed);
        if (status == SizeParseStatus.Invalid)
        {
            Stdio.Error($"Invalid {name} specified. You may use k, M, G, T, P or E suffixes for");
            Stdio.Error("kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
            return false;
        }
        if (status == SizeParseStatus.OutOfRange || parsed > (ulong)max || (long)parsed < min)
        {
            Stdio.Error($"Invalid {name} specified. Must be between {Invariant(min)} and {Invariant(max)}.");
            return false;
        }
        value = (long)parsed;
        return true;
    }

    /// <summary>Prints a qemu_opts error: the message (after <paramref name="prefix"/>) and its hint.</summary>
    public static void Error(QemuOptsError error, string prefix = "")
    {
        Stdio.Error(prefix + error.Message);
        if (error.Hint is not null) Stdio.ErrorRaw(error.Hint);
    }

    /// <summary>
    /// Why vdisk cannot use <paramref name="format"/> as an image format to write (null when it
    /// can: raw and qcow2): QEMU's message for names QEMU does not know or cannot create, vdisk's
    /// own for QEMU formats it does not implement.
    /// </summary>
    public static string? FormatProblem(string format, bool create)
    {
        if (CreateOptionLists.ForFormat(format, withProtocol: false) is not null) return null;
        if (!create && Graph.BlockDrivers.Find(format) is { IsProtocol: false }) return null;
        if (!CreateOptionLists.QemuFormats.Contains(format)) return $"Unknown file format '{format}'";
        if (create && !CreateOptionLists.QemuCreatableFormats.Contains(format)) return $"Format driver '{format}' does not support image creation";
        return $"vdisk does not support the '{format}' format";
    }

    /// <summary>
    /// print_block_option_help: the create options of <paramref name="format"/>, with the file
    /// protocol's when a filename is given. False (after printing the error) for other formats.
    /// </summary>
    public static bool PrintCreateHelp(string format, string? filename)
    {
        if (FormatProblem(format, create: true) is { } problem)
        {
            Stdio.Error(problem);
            return false;
        }
        if (filename is null)
            Stdio.Out.Write(CreateOptionLists.ForFormat(format, withProtocol: false)!.Help($"Supported {format} options:")
                + "\nThe protocol level may support further options.\nSpecify the target filename to include those options.\n");
        else
            Stdio.Out.Write(CreateOptionLists.ForFormat(format, withProtocol: true)!.Help("Supported options:"));
        Stdio.Out.Flush();
        return true;
    }

    /// <summary>error_exit: the message and qemu-img's pointer to its help.</summary>
    public static int ErrorExit(string message)
    {
        Stdio.Error(message);
        Stdio.ErrorRaw($"Try '{Stdio.Program} --help' for more information\n");
        return 1;
    }

    /// <summary>bdrv_parse_cache_mode: the cache modes -t and -T accept.</summary>
    public static bool IsCacheMode(string mode) => mode is "none" or "off" or "writeback" or "writethrough" or "directsync" or "unsafe";

    public static string Invariant(long v) => v.ToString(CultureInfo.InvariantCulture);
}
