using System.CommandLine;
using System.CommandLine.Invocation;
using System.CommandLine.Parsing;
using Vdisk.Cli.Common;

namespace Vdisk.Cli.Img;

/// <summary>The qemu-img verbs of <c>vdisk</c> (info lives in Info/).</summary>
internal static class ImgVerbs
{
    /// <summary>
    /// The verbs, each with <c>--wait</c> wired to every image it opens or creates, and with
    /// getopt's refusal of an unknown option where System.CommandLine would take it for a file name.
    /// </summary>
    public static IEnumerable<Command> All() => Verbs().Select(v => WithWait(v, rejectUnknownOptions: true));

    /// <summary>Adds <c>--wait</c> to a verb that opens images through <see cref="ImgOpen"/>.</summary>
    public static Command WithWait(Command command) => WithWait(command, rejectUnknownOptions: false);

    private static Command WithWait(Command command, bool rejectUnknownOptions)
    {
        var wait = new LockWaitOption();
        wait.AddTo(command);
        command.Action = new WaitingAction(command.Action!, wait, rejectUnknownOptions);
        return command;
    }

    /// <summary>The first operand before any "--" that looks like an option (qemu-img's getopt refuses it), or null.</summary>
    private static string? UnknownOption(ParseResult result)
    {
        var operands = result.CommandResult.Children.OfType<ArgumentResult>().SelectMany(a => a.Tokens).ToHashSet();
        foreach (var token in result.Tokens)
        {
            if (token.Type == TokenType.DoubleDash) return null;
            if (operands.Contains(token) && token.Value.Length > 1 && token.Value[0] == '-') return token.Value;
        }
        return null;
    }

    /// <summary>Sets the verb's --wait for <see cref="ImgOpen"/> and turns a cancelled wait into the signal's exit status.</summary>
    private sealed class WaitingAction(CommandLineAction inner, LockWaitOption wait, bool rejectUnknownOptions) : AsynchronousCommandLineAction
    {
        public override async Task<int> InvokeAsync(ParseResult parseResult, CancellationToken cancellationToken = default)
        {
            if (rejectUnknownOptions && UnknownOption(parseResult) is { } unknown) return ImgOptions.ErrorExit($"unrecognized option '{unknown}'");
            ImgOpen.Wait = wait.Options(parseResult);
            using var signals = ImgOpen.Wait is null ? null : new Signals();
            ImgOpen.WaitCancellation = signals?.Token ?? CancellationToken.None;
            try
            {
                return inner switch
                {
                    AsynchronousCommandLineAction a => await a.InvokeAsync(parseResult, cancellationToken),
                    SynchronousCommandLineAction s => s.Invoke(parseResult),
                    _ => throw new InvalidOperationException("unknown action type"),
                };
            }
            catch (OperationCanceledException) when (signals is { Received: > 0 })
            {
                return signals.ExitCode(1);
            }
        }
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
    ];
}
