using System.CommandLine;
using Vdisk.Cli.Common;

namespace Vdisk.Cli.Img;

/// <summary>The qemu-img verbs of <c>vdisk</c> (info lives in Info/).</summary>
internal static class ImgVerbs
{
    /// <summary>The verbs, each with <c>--wait</c>, which <see cref="ImgOpen"/> applies to every image it opens or creates.</summary>
    public static IEnumerable<Command> All() => Verbs().Select(WithWait);

    /// <summary>Adds <c>--wait</c> to a verb that opens images through <see cref="ImgOpen"/>.</summary>
    public static Command WithWait(Command command)
    {
        new LockWaitOption().AddTo(command);
        return command;
    }

    private static IEnumerable<Command> Verbs() =>
    [
        CreateCommand.Create(),
        CheckCommand.Create(),
        ConvertCommand.Create(),
        MapCommand.Create(),
        CompareCommand.Create(),
        ResizeCommand.Create(),
        CommitCommand.Create(),
        RebaseCommand.Create(),
        MeasureCommand.Create(),
        SnapshotCommand.Create(),
        AmendCommand.Create(),
        DdCommand.Create(),
        BenchCommand.Create(),
    ];
}
