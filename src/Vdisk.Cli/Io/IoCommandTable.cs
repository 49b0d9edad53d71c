using Vdisk.Permissions;

namespace Vdisk.Cli.Io;

/// <summary>One qemu-io command: its names, argument counts, the permission it needs, and its help line.</summary>
internal sealed record IoCommandInfo(
    string Name,
    string? AltName,
    int ArgMin,
    int ArgMax,
    bool NoFileOk,
    bool Global,
    BlockPermission Permission,
    string? Args,
    string OneLine,
    string? Details = null);

/// <summary>The qemu-io commands vdisk io implements, with qemu-io 7.2's names and help text.</summary>
internal static class IoCommandTable
{
    public static readonly IoCommandInfo[] Commands =
    [
        new("close", "c", 0, 0, false, false, BlockPermission.None, null, "close the current open file"),
        new("discard", "d", 2, -1, false, false, BlockPermission.Write, "[-Cq] off len", "discards a number of bytes at a specified offset",
            " Tells the image that a range is no longer needed; its content becomes undefined.\n" +
            " -C  print statistics as comma-separated values\n -q  print no statistics\n"),
        new("flush", "f", 0, 0, false, false, BlockPermission.None, null, "flush all in-core file state to disk"),
        new("help", "?", 0, 1, true, true, BlockPermission.None, "[command]", "help for one or all commands"),
        new("info", "i", 0, 0, false, false, BlockPermission.None, null, "prints information about the current file"),
        new("length", "l", 0, 0, false, false, BlockPermission.None, null, "gets the length of the current file"),
        new("map", null, 0, 0, false, false, BlockPermission.None, "", "prints the allocated areas of a file"),
        new("open", "o", 1, -1, true, false, BlockPermission.None, "[-rsCnkU] [-t cache] [-d discard] [-o options] [path]", "open the file specified by path",
            " Opens an image for the commands that follow; only one image is open at a time.\n" +
            " -r  read-only            -U  share every permission with other users\n" +
            " -o  block driver options, e.g. -o driver=raw\n" +
            " -s, -C, -n, -k, -t, -d are accepted for compatibility\n"),
        // qemu-io's quit takes any number of arguments.
        new("quit", "q", 0, -1, true, true, BlockPermission.None, null, "exit the program"),
        new("read", "r", 2, -1, false, false, BlockPermission.ConsistentRead, "[-abCqv] [-P pattern [-s off] [-l len]] off len", "reads a number of bytes at a specified offset",
            " Reads len bytes at off, e.g. 'read -v 0 512' shows the first sector in hex.\n" +
            " -P  check that every byte equals the pattern (-s/-l narrow the checked part)\n" +
            " -v  hex dump        -C  comma-separated statistics        -q  no statistics\n"),
        new("sleep", null, 1, 1, true, false, BlockPermission.None, null, "waits for the given value in milliseconds"),
        new("truncate", "t", 1, 3, false, false, BlockPermission.Write | BlockPermission.Resize, "[-m prealloc_mode] off", "truncates the current file at the given offset"),
        new("write", "w", 2, -1, false, false, BlockPermission.Write, "[-bcCfnquz] [-P pattern | -s source_file] off len", "writes a number of bytes at a specified offset",
            " Writes len bytes at off, filled with 0xcd unless told otherwise.\n" +
            " -P  fill with a byte pattern   -s  take the bytes from a file\n" +
            " -z  write zeroes (-u may unmap, -n fails rather than writing zero buffers)\n" +
            " -f  force unit access          -C  comma-separated statistics   -q  no statistics\n"),
    ];

    public static IoCommandInfo? Find(string name) =>
        Commands.FirstOrDefault(c => c.Name == name || c.AltName == name);

    /// <summary>help_oneline: the command as <paramref name="name"/> (the word typed after "help", else its name), its arguments and one line.</summary>
    public static string HelpLine(IoCommandInfo c, string? name = null) =>
        c.Args is null ? $"{name ?? c.Name} -- {c.OneLine}" : $"{name ?? c.Name} {c.Args} -- {c.OneLine}";
}
