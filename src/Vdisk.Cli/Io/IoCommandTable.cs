using Vdisk.Permissions;

namespace Vdisk.Cli.Io;

/// <summary>
/// One qemu-io command: its names, handler, argument counts, the permission it needs, and its help
/// line. <see cref="Polls"/>: whether it runs the event loop (any I/O does), where qemu-io reports
/// the aio requests that completed since.
/// </summary>
internal sealed record IoCommandInfo(
    string Name,
    string? AltName,
    Func<IoSession, string[], Task<int>> Run,
    int ArgMin,
    int ArgMax,
    bool NoFileOk,
    bool Global,
    BlockPermission Permission,
    string? Args,
    string OneLine,
    string? Details = null,
    bool Polls = true);

/// <summary>The qemu-io commands vdisk io implements, with qemu-io 7.2's names and help text.</summary>
internal static class IoCommandTable
{
    public static readonly IoCommandInfo[] Commands =
    [
        new("abort", null, static (s, _) => Task.FromResult(s.Abort()), 0, 0, true, false, BlockPermission.None, null, "simulate a program crash using abort(3)", Polls: false),
        new("aio_flush", null, static (s, _) => s.AioFlushAsync(), 0, 0, false, false, BlockPermission.None, null, "completes all outstanding aio requests"),
        new("aio_read", null, static (s, w) => s.ReadVectorAsync(w, aio: true), 2, -1, false, false, BlockPermission.ConsistentRead, "[-Ciqv] [-P pattern] off len [len..]", "asynchronously reads a number of bytes",
            " Reads like readv, but reports when the request completes: at aio_flush or the next\n" +
            " command that waits for I/O. -i counts an invalid request and reads nothing.\n", Polls: false),
        new("aio_write", null, static (s, w) => s.WriteVectorAsync(w, aio: true), 2, -1, false, false, BlockPermission.Write, "[-Cfiquz] [-P pattern] off len [len..]", "asynchronously writes a number of bytes",
            " Writes like writev, but reports when the request completes: at aio_flush or the next\n" +
            " command that waits for I/O. -z writes zeroes (one length), -u lets them unmap.\n", Polls: false),
        new("alloc", "a", static (s, w) => s.AllocAsync(w), 1, 2, false, false, BlockPermission.None, "offset [count]", "checks if offset is allocated in the file"),
        new("break", "b", static (s, w) => Task.FromResult(s.Break(w)), 2, 2, false, false, BlockPermission.None, "event tag", "sets a breakpoint on event and tags the stopped request as tag", Polls: false),
        new("close", "c", static (s, _) => s.CloseAsync(), 0, 0, false, false, BlockPermission.None, null, "close the current open file"),
        new("discard", "d", static (s, w) => s.DiscardAsync(w), 2, -1, false, false, BlockPermission.Write, "[-Cq] off len", "discards a number of bytes at a specified offset",
            " Tells the image that a range is no longer needed; its content becomes undefined.\n" +
            " -C  print statistics as comma-separated values\n -q  print no statistics\n"),
        new("flush", "f", static (s, _) => s.FlushAsync(), 0, 0, false, false, BlockPermission.None, null, "flush all in-core file state to disk"),
        new("help", "?", static (s, w) => Task.FromResult(s.Help(w)), 0, 1, true, true, BlockPermission.None, "[command]", "help for one or all commands", Polls: false),
        new("info", "i", static (s, _) => Task.FromResult(s.Info()), 0, 0, false, false, BlockPermission.None, null, "prints information about the current file", Polls: false),
        new("length", "l", static (s, _) => Task.FromResult(s.Length()), 0, 0, false, false, BlockPermission.None, null, "gets the length of the current file", Polls: false),
        new("map", null, static (s, _) => s.MapAsync(), 0, 0, false, false, BlockPermission.None, "", "prints the allocated areas of a file"),
        new("open", "o", static (s, w) => Task.FromResult(s.Open(w)), 1, -1, true, false, BlockPermission.None, "[-rsCnkU] [-t cache] [-d discard] [-o options] [path]", "open the file specified by path",
            " Opens an image for the commands that follow; only one image is open at a time.\n" +
            " -r  read-only            -U  share every permission with other users\n" +
            " -o  block driver options, e.g. -o driver=raw\n" +
            " -s  use a temporary overlay (writes never reach the image)\n" +
            " -C  copy-on-read: copy what reads find in the backing chain into the image\n" +
            " -n, -t, -d  cache and discard modes, as on the command line; -k is accepted\n"),
        // qemu-io's quit takes any number of arguments.
        new("quit", "q", static (s, _) => Task.FromResult(s.Quit()), 0, -1, true, true, BlockPermission.None, null, "exit the program", Polls: false),
        new("read", "r", static (s, w) => s.ReadAsync(w), 2, -1, false, false, BlockPermission.ConsistentRead, "[-abCqv] [-P pattern [-s off] [-l len]] off len", "reads a number of bytes at a specified offset",
            " Reads len bytes at off, e.g. 'read -v 0 512' shows the first sector in hex.\n" +
            " -P  check that every byte equals the pattern (-s/-l narrow the checked part)\n" +
            " -v  hex dump        -C  comma-separated statistics        -q  no statistics\n"),
        new("readv", null, static (s, w) => s.ReadVectorAsync(w, aio: false), 2, -1, false, false, BlockPermission.ConsistentRead, "[-Cqv] [-P pattern] off len [len..]", "reads a number of bytes at a specified offset",
            " Reads len bytes (the sum of the lengths) at off into one buffer per length.\n" +
            " -P  check every byte against the pattern   -v  hex dump\n" +
            " -C  comma-separated statistics             -q  no statistics\n"),
        new("reopen", null, static (s, w) => s.ReopenAsync(w), 0, -1, false, false, BlockPermission.None, "[(-r|-w)] [-c cache] [-o options]", "reopens an image with new options",
            " Changes the open options of the image.\n" +
            " -r  read-only      -w  read-write      -c  the cache mode (as -t)\n" +
            " -o  read-only=on|off, cache.direct=on|off, cache.no-flush=on|off\n"),
        new("sigraise", null, static (s, w) => Task.FromResult(s.SigRaise(w)), 1, 1, true, false, BlockPermission.None, "signal", "raises a signal",
            " Raises the signal numbered by the argument (e.g. 'sigraise 15' raises SIGTERM).\n", Polls: false),
        new("remove_break", "rb", static (s, w) => Task.FromResult(s.RemoveBreak(w)), 1, 1, false, false, BlockPermission.None, "tag", "remove a breakpoint by tag", Polls: false),
        new("resume", "r", static (s, w) => Task.FromResult(s.Resume(w)), 1, 1, false, false, BlockPermission.None, "tag", "resumes the request tagged as tag", Polls: false),
        new("sleep", null, static (s, w) => s.SleepAsync(w), 1, 1, true, false, BlockPermission.None, null, "waits for the given value in milliseconds"),
        new("truncate", "t", static (s, w) => s.TruncateAsync(w), 1, 3, false, false, BlockPermission.Write | BlockPermission.Resize, "[-m prealloc_mode] off", "truncates the current file at the given offset"),
        new("wait_break", null, static (s, w) => s.WaitBreakAsync(w), 1, 1, false, false, BlockPermission.None, "tag", "waits for the suspension of a request", Polls: false),
        new("write", "w", static (s, w) => s.WriteAsync(w), 2, -1, false, false, BlockPermission.Write, "[-bcCfnquz] [-P pattern | -s source_file] off len", "writes a number of bytes at a specified offset",
            " Writes len bytes at off, filled with 0xcd unless told otherwise.\n" +
            " -P  fill with a byte pattern   -s  take the bytes from a file\n" +
            " -z  write zeroes (-u may unmap, -n fails rather than writing zero buffers)\n" +
            " -f  force unit access          -C  comma-separated statistics   -q  no statistics\n"),
        new("writev", null, static (s, w) => s.WriteVectorAsync(w, aio: false), 2, -1, false, false, BlockPermission.Write, "[-Cfq] [-P pattern] off len [len..]", "writes a number of bytes at a specified offset",
            " Writes len bytes (the sum of the lengths) at off from one buffer per length, filled\n" +
            " with 0xcd unless -P names the byte. -f force unit access.\n" +
            " -C  comma-separated statistics   -q  no statistics\n"),
    ];

    public static IoCommandInfo? Find(string name) =>
        Commands.FirstOrDefault(c => c.Name == name || c.AltName == name);

    /// <summary>help_oneline: the command as <paramref name="name"/> (the word typed after "help", else its name), its arguments and one line.</summary>
    public static string HelpLine(IoCommandInfo c, string? name = null) =>
        c.Args is null ? $"{name ?? c.Name} -- {c.OneLine}" : $"{name ?? c.Name} {c.Args} -- {c.OneLine}";
}
