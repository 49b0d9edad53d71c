using System.CommandLine;
using Vdisk.Cli.Common;

namespace Vdisk.Cli.Img;

/// <summary>The qemu-img verbs of <c>vdisk</c> (info lives in Info/).</summary>
internal static class ImgVerbs
{
    /// <summary>
    /// The verbs by name, each built (with <c>--wait</c>, which <see cref="ImgOpen"/> applies to
    /// every image it opens or creates) only when asked for: a run builds the verb that runs.
    /// </summary>
    public static IReadOnlyList<(string Name, Func<Command> Create)> All { get; } =
    [
        ("create", () => WithWait(CreateCommand.Create())),
        ("check", () => WithWait(CheckCommand.Create())),
        ("convert", () => WithWait(ConvertCommand.Create())),
        ("map", () => WithWait(MapCommand.Create())),
        ("compare", () => WithWait(CompareCommand.Create())),
        ("resize", () => WithWait(ResizeCommand.Create())),
        ("commit", () => WithWait(CommitCommand.Create())),
        ("rebase", () => WithWait(RebaseCommand.Create())),
        ("measure", () => WithWait(MeasureCommand.Create())),
        ("snapshot", () => WithWait(SnapshotCommand.Create())),
        ("amend", () => WithWait(AmendCommand.Create())),
        ("dd", () => WithWait(DdCommand.Create())),
        ("bench", () => WithWait(BenchCommand.Create())),
        ("bitmap", () => WithWait(BitmapCommand.Create())),
    ];

    /// <summary>Adds <c>--wait</c> to a verb that opens images through <see cref="ImgOpen"/>.</summary>
    public static Command WithWait(Command command)
    {
        new LockWaitOption().AddTo(command);
        return command;
    }
}
