using System.CommandLine;

namespace Vdisk.Cli.Img;

/// <summary>The qemu-img verbs of <c>vdisk</c> (info lives in Info/).</summary>
internal static class ImgVerbs
{
    public static IEnumerable<Command> All() =>
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
    ];
}
