using Spectre.Console;

namespace Vdisk.Cli.Img;

/// <summary>
/// The -p progress bar of long verbs: Spectre.Console on stderr, shown only when stderr is a
/// terminal (so scripts and pipes see nothing).
/// </summary>
internal static class ProgressBar
{
    /// <summary>Runs <paramref name="work"/>, reporting 0..1 through the callback it receives.</summary>
    public static async Task<T> RunAsync<T>(bool enabled, string description, Func<Action<double>, Task<T>> work)
    {
        if (!enabled || Console.IsErrorRedirected) return await work(_ => { });
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
        T result = default!;
        await console.Progress()
            .AutoClear(true)
            .HideCompleted(true)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
            .StartAsync(async ctx =>
            {
                var task = ctx.AddTask(description, maxValue: 100);
                result = await work(fraction => task.Value = Math.Clamp(fraction * 100, 0, 100));
                task.Value = 100;
            });
        return result;
    }
}
