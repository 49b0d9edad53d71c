using System.CommandLine;
using Vdisk.Cli.Common;
using Vdisk.Cli.Info;
using Vdisk.Cli.Io;

namespace Vdisk.Cli;

internal static class Program
{
    public static async Task<int> Main(string[] args)
    {
        Stdio.InstallWarningSink();
        var root = new RootCommand("vdisk: disk images with QEMU-compatible image locking");
        root.Subcommands.Add(IoCommand.Create());
        root.Subcommands.Add(InfoCommand.Create());
        foreach (var verb in Img.ImgVerbs.All()) root.Subcommands.Add(verb);

        // No response files: qemu tools take '@' literally.
        var parse = root.Parse(args, new ParserConfiguration { ResponseFileTokenReplacer = null });
        if (parse.Errors.Count > 0 && parse.Action is not System.CommandLine.Help.HelpAction)
        {
            Stdio.Error(parse.Errors[0].Message);
            return 1;
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
