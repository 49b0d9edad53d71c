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
        // Multi-call: a symlink named qemu-img, qemu-io, qemu-storage-daemon or qemu-nbd makes vdisk that tool.
        var tool = Personality.FromProgramPath(Personality.ProgramPath());
        Stdio.SetProgram(tool);
        Stdio.InstallWarningSink();
        switch (tool)
        {
            case Tool.QemuStorageDaemon:
                return await ServeCommand.RunAsync(args, tool);
            case Tool.QemuNbd:
                return await Nbd.QemuNbdCommand.RunAsync(args);
            case Tool.QemuIo:
                // qemu-io's command line is vdisk io's.
                args = [IoCommand.Name, .. args];
                break;
            case Tool.Vdisk when args.Length > 0 && args[0] == ServeCommand.Name:
                // serve takes qemu-storage-daemon's ordered, repeated options: it parses them itself.
                return await ServeCommand.RunAsync(args[1..], tool);
        }
        // Every verb's definition is built, though one runs: cheap next to opening an image,
        // and the place to start if start-up time ever needs it (only the named verb is needed,
        // plus the names of the others for "Command not found").
        var root = new RootCommand("vdisk: disk images with QEMU-compatible image locking");
        if (tool != Tool.QemuImg)
        {
            root.Subcommands.Add(IoCommand.Create());
        }
        root.Subcommands.Add(Img.ImgVerbs.WithWait(InfoCommand.Create()));
        if (tool == Tool.Vdisk)
        {
            root.Subcommands.Add(ServeCommand.CreateForHelp());
            root.Subcommands.Add(LocksCommand.Create());
        }
        if (tool != Tool.QemuIo)
        {
            foreach (var verb in Img.ImgVerbs.All()) root.Subcommands.Add(verb);
        }
        if (tool == Tool.Vdisk)
        {
            // vdisk's --cluster beside --wait on every verb that opens images (QEMU's names take
            // their cluster settings from VDISK_ETCD_* only).
            foreach (var verb in root.Subcommands.Where(v => v.Options.OfType<LockWaitOption>().Any()))
                verb.Options.Add(ClusterOption.WithValue());
        }
        else
        {
            // qemu-img -V / --version: the QEMU tool's version text (vdisk's own keeps System.CommandLine's).
            var version = root.Options.OfType<VersionOption>().Single();
            version.Aliases.Add("-V");
            version.Action = new PrintVersionAction(tool);
        }

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
            // A bad --cluster value is reported before the verb runs, on one line.
            ClusterOption.Settings(parse);
        }
        catch (Options.OptionException e)
        {
            Stdio.Error(e.Message);
            return parse.CommandResult.Command.Name == "locks" ? LocksCommand.ExitError : 1;
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

    private static int PrintVersion(Tool tool)
    {
        Stdio.Out.Write(Personality.VersionText(tool, Personality.VdiskVersion));
        Stdio.Out.Flush();
        return 0;
    }

    private sealed class PrintVersionAction(Tool tool) : System.CommandLine.Invocation.SynchronousCommandLineAction
    {
        public override int Invoke(ParseResult parseResult) => PrintVersion(tool);
    }
}
