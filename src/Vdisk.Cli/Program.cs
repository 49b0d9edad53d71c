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
        Stdio.UseDescriptorStandardError();
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
        if (tool == Tool.QemuImg && Img.QemuImgHelp.IsRequest(args))
        {
            // qemu-img's own help (QEMU's text), not System.CommandLine's.
            Stdio.Out.Write(Img.QemuImgHelp.Text(Personality.VersionText(tool, Personality.VdiskVersion), Vdisk.Graph.BlockDrivers.Names));
            Stdio.Out.Flush();
            return 0;
        }
        // The everyday info and io lines skip System.CommandLine (OneShotCommandLine says which).
        if (OneShotCommandLine.TryRead(tool, args) is { } oneShot && Environment.GetEnvironmentVariable("VDISK_FULL_PARSER") is not "1")
            return await RunVerbAsync(oneShot);
        var root = CommandTree(tool, args, out var fullTree);
        if (root is null) return PrintVersion(tool);
        var argv = FrontDoor.Rewrite(root, args, fullTree, out int usageError);
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
        // qemu-img and qemu-io define --object's objects while they read their options.
        if (ObjectOption.Apply(parse) is int objectExit) return objectExit;
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
        return await RunVerbAsync(() => parse.InvokeAsync(new InvocationConfiguration { EnableDefaultExceptionHandler = false, ProcessTerminationTimeout = null }));
    }

    /// <summary>Runs the verb, then flushes stdout; a failure ends the run with one line, never a stack trace.</summary>
    private static async Task<int> RunVerbAsync(Func<Task<int>> verb)
    {
        try
        {
            int rc = await verb();
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

    /// <summary>
    /// The command tree for <paramref name="args"/>, built lazily: most runs are one verb on one
    /// image, and building every verb's options (and System.CommandLine's help and version options,
    /// whose descriptions come from its resources) was a third of a one-shot command's CPU time
    /// (docs/architecture.md, "Start-up"). A command line that names a verb and cannot ask for help
    /// gets a root holding that verb alone; anything else (help, root options, an unknown verb)
    /// gets the whole tree, <paramref name="fullTree"/>, as before. Null: a bare version request,
    /// answered without a tree.
    /// </summary>
    private static Command? CommandTree(Tool tool, string[] args, out Func<Command> fullTree)
    {
        fullTree = () => FullTree(tool, Verbs(tool));
        string[] words = args.Length > 0 && args[0] == "--" ? args[1..] : args;
        if (words.Length == 1 && IsVersionRequest(tool, words[0])) return null;
        if (words.Length == 0 || FrontDoor.MayAskForHelp(words)) return fullTree();
        foreach (var (name, create) in Verbs(tool))
        {
            if (name != words[0]) continue;
            var root = new Command(RootName);
            root.Subcommands.Add(WithClusterOption(tool, create()));
            return root;
        }
        return fullTree();
    }

    private const string RootName = "vdisk";

    /// <summary>Every verb of <paramref name="tool"/>, in the order <c>--help</c> lists them.</summary>
    private static List<(string Name, Func<Command> Create)> Verbs(Tool tool)
    {
        var verbs = new List<(string Name, Func<Command> Create)>();
        if (tool != Tool.QemuImg) verbs.Add((IoCommand.Name, IoCommand.Create));
        verbs.Add((InfoCommand.Name, () => Img.ImgVerbs.WithWait(InfoCommand.Create())));
        if (tool == Tool.Vdisk)
        {
            verbs.Add((ServeCommand.Name, ServeCommand.CreateForHelp));
            verbs.Add((LocksCommand.Name, LocksCommand.Create));
        }
        if (tool != Tool.QemuIo) verbs.AddRange(Img.ImgVerbs.All);
        return verbs;
    }

    /// <summary>The root with every verb, and the help and version options.</summary>
    private static RootCommand FullTree(Tool tool, List<(string Name, Func<Command> Create)> verbs)
    {
        var root = new RootCommand("vdisk: disk images with QEMU-compatible image locking");
        foreach (var (_, create) in verbs) root.Subcommands.Add(WithClusterOption(tool, create()));
        if (tool != Tool.Vdisk)
        {
            // qemu-img -V / --version: the QEMU tool's version text (vdisk's own keeps System.CommandLine's).
            var version = root.Options.OfType<VersionOption>().Single();
            version.Aliases.Add("-V");
            version.Action = new PrintVersionAction(tool);
        }
        return root;
    }

    /// <summary>
    /// vdisk's --cluster beside --wait on every verb that opens images (QEMU's names take their
    /// cluster settings from VDISK_ETCD_* only).
    /// </summary>
    private static Command WithClusterOption(Tool tool, Command verb)
    {
        bool waits = false;
        if (tool == Tool.Vdisk)
            for (int i = 0; i < verb.Options.Count; i++) waits |= verb.Options[i] is LockWaitOption;
        if (waits) verb.Options.Add(ClusterOption.WithValue());
        return ObjectOption.AddTo(verb);
    }

    /// <summary>
    /// <c>--version</c> alone, or an abbreviation getopt would take for it (the root's long
    /// options are --help and --version), or QEMU's <c>-V</c> under a QEMU tool's name.
    /// </summary>
    private static bool IsVersionRequest(Tool tool, string word) =>
        tool is Tool.Vdisk or Tool.QemuImg
        && ((word.Length > 2 && word.StartsWith("--", StringComparison.Ordinal) && "version".StartsWith(word[2..], StringComparison.Ordinal))
            || (word == "-V" && tool != Tool.Vdisk));

    private static int PrintVersion(Tool tool)
    {
        // vdisk's own: what System.CommandLine's --version prints (the informational version).
        Stdio.Out.Write(tool == Tool.Vdisk ? VdiskInformationalVersion + "\n" : Personality.VersionText(tool, Personality.VdiskVersion));
        Stdio.Out.Flush();
        return 0;
    }

    /// <summary>Baked in at build time (<see cref="BuildVersion"/>): no reflection on the way to the answer.</summary>
    private static string VdiskInformationalVersion => BuildVersion.Informational;

    private sealed class PrintVersionAction(Tool tool) : System.CommandLine.Invocation.SynchronousCommandLineAction
    {
        public override int Invoke(ParseResult parseResult) => PrintVersion(tool);
    }
}
