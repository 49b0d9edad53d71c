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
        // serve takes qemu-storage-daemon's ordered, repeated options: it parses them itself.
        if (args.Length > 0 && args[0] == ServeCommand.Name) return await ServeCommand.RunAsync(args[1..]);
        // Every verb's definition is built, though one runs: cheap next to opening an image,
        // and the place to start if start-up time ever needs it (only the named verb is needed,
        // plus the names of the others for "Command not found").
        var root = new RootCommand("vdisk: disk images with QEMU-compatible image locking");
        root.Subcommands.Add(IoCommand.Create());
        root.Subcommands.Add(Img.ImgVerbs.WithWait(InfoCommand.Create()));
        root.Subcommands.Add(ServeCommand.CreateForHelp());
        root.Subcommands.Add(LocksCommand.Create());
        foreach (var verb in Img.ImgVerbs.All()) root.Subcommands.Add(verb);

        var argv = FrontDoor.Rewrite(root, args, out int usageError);
        if (argv is null)
        {
            Stdio.Out.Flush();
            return usageError;
        }
        // No response files: qemu tools take '@' literally.
        var parse = root.Parse(argv, new ParserConfiguration { ResponseFileTokenReplacer = null });
        if (parse.Errors.Count > 0 && parse.Action is not System.CommandLine.Help.HelpAction)
        {
            string verb = parse.CommandResult.Command.Name;
            Stdio.Error(parse.Errors[0].Message);
            // qemu-img follows a usage error with a hint; qemu-io and vdisk locks do not.
            if (verb is not ("io" or "locks")) Console.Error.Write(FrontDoor.TryHelp);
            // qemu tools exit 1 on usage errors; vdisk locks keeps 1 for "blocked".
            return verb == "locks" ? LocksCommand.ExitError : 1;
        }
        try
        {
            int rc = await parse.InvokeAsync(new InvocationConfiguration { EnableDefaultExceptionHandler = false, ProcessTerminationTimeout = null });
            Stdio.Out.Flush();
            return rc;
        }
        catch (SignalledException e)
        {
            return e.ExitCode;
        }
        catch (Exception e) when (Stdio.Describe(e) is { } text)
        {
            Stdio.Error(text);
            return 1;
        }
        catch (Exception e)
        {
            // A failure nobody foresaw: one line, not a stack trace (VDISK_DEBUG=1 shows it).
            Stdio.Error($"unexpected error ({e.GetType().Name}): {e.Message}");
            if (Environment.GetEnvironmentVariable("VDISK_DEBUG") is "1") Console.Error.Write(e + "\n");
            return 1;
        }
    }
}
