using System.CommandLine;
using Vdisk.Cli.Common;
using Vdisk.Cli.Info;
using Vdisk.Cli.Io;
using Vdisk.Cli.Locks;
using Vdisk.Cli.Serve;

namespace Vdisk.Cli;

internal static class Program
{
    public static async Task<int> Main(string[] args)
    {
        Stdio.InstallWarningSink();
        try
        {
            args = ClusterOption.Apply(args);
        }
        catch (Options.OptionException e)
        {
            Stdio.Error(e.Message);
            return args.Length > 0 && args[0] == "locks" ? LocksCommand.ExitError : 1;
        }
        // serve takes qemu-storage-daemon's ordered, repeated options: it parses them itself.
        if (args.Length > 0 && args[0] == ServeCommand.Name) return await ServeCommand.RunAsync(args[1..]);
        var root = new RootCommand("vdisk: disk images with QEMU-compatible image locking");
        root.Subcommands.Add(IoCommand.Create());
        root.Subcommands.Add(Img.ImgVerbs.WithWait(InfoCommand.Create()));
        root.Subcommands.Add(ServeCommand.CreateForHelp());
        root.Subcommands.Add(LocksCommand.Create());
        foreach (var verb in Img.ImgVerbs.All()) root.Subcommands.Add(verb);

        if (args.Length > 0 && args[0] is "amend" or "commit" or "resize" && args.Any(a => a is "-U" or "--force-share"))
        {
            // qemu-img's getopt for these verbs has no -U (force-share makes no sense for writers).
            Stdio.Error($"unrecognized option '{args.First(a => a is "-U" or "--force-share")}'");
            Console.Error.Write("Try 'vdisk --help' for more information\n");
            return 1;
        }
        if (args.Length > 2 && args[0] == "resize" && args[^1].Length > 1 && args[^1][0] == '-' && char.IsAsciiDigit(args[^1][1]) && args[^2] != "--")
        {
            // A negative size is an operand, not an option (qemu-img removes it before getopt too).
            args = [.. args[..^1], "--", args[^1]];
        }

        // No response files: qemu tools take '@' literally.
        var parse = root.Parse(LockWaitOption.Normalize(args), new ParserConfiguration { ResponseFileTokenReplacer = null });
        if (parse.Errors.Count > 0 && parse.Action is not System.CommandLine.Help.HelpAction)
        {
            Stdio.Error(parse.Errors[0].Message);
            // qemu tools exit 1 on usage errors; vdisk locks keeps 1 for "blocked".
            return parse.CommandResult.Command.Name == "locks" ? LocksCommand.ExitError : 1;
        }
        try
        {
            int rc = await parse.InvokeAsync(new InvocationConfiguration { EnableDefaultExceptionHandler = false, ProcessTerminationTimeout = null });
            Stdio.Out.Flush();
            return rc;
        }
        catch (Exception e) when (Stdio.Describe(e) is { } text)
        {
            Stdio.Error(text);
            return 1;
        }
    }
}
