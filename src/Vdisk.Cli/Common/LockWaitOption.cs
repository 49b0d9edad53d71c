using System.CommandLine;
using System.Globalization;
using Vdisk.Locking;

namespace Vdisk.Cli.Common;

/// <summary>
/// <c>--wait[=SECONDS]</c> for every verb that opens images: on a lock conflict, queue until the
/// holder lets go instead of failing. Verbs call <see cref="Open{T}"/> around their open; without
/// the option that is exactly a plain call.
/// </summary>
internal sealed class LockWaitOption
{
    /// <summary>The value that stands for "no limit" (a bare <c>--wait</c>).</summary>
    private const string Forever = "forever";

    public Option<string?> Option { get; }

    public LockWaitOption()
    {
        Option = new Option<string?>("--wait")
        {
            Arity = ArgumentArity.ZeroOrOne,
            HelpName = "SECONDS",
            Description = "on a lock conflict, wait for the holder to release the image instead of failing: --wait waits until it does, --wait=SECONDS at most SECONDS",
        };
        Option.Validators.Add(r =>
        {
            if (r.Tokens.Count == 1 && ParseTimeout(r.Tokens[0].Value) is null)
                r.AddError($"--wait: invalid number of seconds '{r.Tokens[0].Value}'");
        });
    }

    public void AddTo(Command command) => command.Options.Add(Option);

    /// <summary>The wait the user asked for, or null without <c>--wait</c>.</summary>
    public LockWaitOptions? Options(ParseResult result)
    {
        if (result.GetResult(Option) is null) return null;
        var timeout = ParseTimeout(result.GetValue(Option));
        return new LockWaitOptions { Timeout = timeout == TimeSpan.MaxValue ? null : timeout, Waiting = Announce };
    }

    /// <summary>
    /// Runs <paramref name="open"/>, waiting on lock conflicts when <c>--wait</c> was given. A
    /// cancelled wait (Ctrl-C, SIGTERM) throws <see cref="OperationCanceledException"/>.
    /// </summary>
    /// <summary>The wait for a <c>--wait[=SECONDS]</c> value parsed by hand (vdisk serve), or null when invalid.</summary>
    public static LockWaitOptions? FromText(string? text) => ParseTimeout(text) is { } timeout
        ? new LockWaitOptions { Timeout = timeout == TimeSpan.MaxValue ? null : timeout, Waiting = Announce }
        : null;

    public T Open<T>(ParseResult result, Func<T> open, CancellationToken cancellationToken)
    {
        var options = Options(result);
        return options is null ? open() : LockWait.Run(open, options, cancellationToken);
    }

    /// <summary>Seconds as a time span, <see cref="TimeSpan.MaxValue"/> for no limit, null when invalid.</summary>
    internal static TimeSpan? ParseTimeout(string? text)
    {
        if (text is null or "" or Forever) return TimeSpan.MaxValue;
        if (!double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double seconds)) return null;
        if (double.IsNaN(seconds) || seconds < 0 || seconds > 1e9) return null;
        return TimeSpan.FromSeconds(seconds);
    }

    internal static void Announce(LockWaitNotice notice) => Stdio.Error(notice.Message);

    /// <summary>
    /// Rewrites a bare <c>--wait</c> to <c>--wait=forever</c> so that the parser does not take
    /// the next word (the image name) as its value; <c>--wait=SECONDS</c> passes unchanged.
    /// </summary>
    public static string[] Normalize(string[] args)
    {
        var result = (string[])args.Clone();
        for (int i = 0; i < result.Length; i++)
        {
            if (result[i] == "--") break;
            if (result[i] == "--wait") result[i] = "--wait=" + Forever;
        }
        return result;
    }
}
