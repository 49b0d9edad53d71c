using System.CommandLine;
using System.Globalization;
using Vdisk.Locking;

namespace Vdisk.Cli.Common;

/// <summary>
/// <c>--wait[=SECONDS]</c> for every verb that opens images: on a lock conflict, queue until the
/// holder lets go instead of failing. Its value is optional and, as for any getopt option with an
/// optional value, given only with <c>=</c>: a bare <c>--wait</c> never takes the next word
/// (<see cref="FrontDoor"/>), so <c>--wait 5 img</c> waits without limit on image "5".
/// </summary>
internal sealed class LockWaitOption : Option<string?>
{
    public LockWaitOption() : base("--wait")
    {
        Arity = ArgumentArity.ZeroOrOne;
        HelpName = "SECONDS";
        Description = "on a lock conflict, wait for the holder to release the image instead of failing: --wait waits until it does, --wait=SECONDS at most SECONDS";
        Validators.Add(r =>
        {
            if (r.Tokens.Count == 1 && ParseTimeout(r.Tokens[0].Value) is null)
                r.AddError($"--wait: invalid number of seconds '{r.Tokens[0].Value}'");
        });
    }

    public void AddTo(Command command) => command.Options.Add(this);

    /// <summary>The wait the user asked for, or null without <c>--wait</c>.</summary>
    public LockWaitOptions? Options(ParseResult result) =>
        result.GetResult(this) is null ? null : FromText(result.GetValue(this));

    /// <summary>The <c>--wait</c> of the verb <paramref name="result"/> is for, or null (no such option, or not given).</summary>
    public static LockWaitOptions? Of(ParseResult result) =>
        result.CommandResult.Command.Options.OfType<LockWaitOption>().FirstOrDefault()?.Options(result);

    /// <summary>The wait for a <c>--wait[=SECONDS]</c> value (null: no value), or null when invalid.</summary>
    public static LockWaitOptions? FromText(string? text) => ParseTimeout(text) is { } timeout
        ? new LockWaitOptions { Timeout = timeout == TimeSpan.MaxValue ? null : timeout, Waiting = Announce }
        : null;

    /// <summary>Seconds as a time span, <see cref="TimeSpan.MaxValue"/> for no limit, null when invalid.</summary>
    internal static TimeSpan? ParseTimeout(string? text)
    {
        if (string.IsNullOrEmpty(text)) return TimeSpan.MaxValue;
        if (!double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double seconds)) return null;
        if (double.IsNaN(seconds) || seconds < 0 || seconds > 1e9) return null;
        return TimeSpan.FromSeconds(seconds);
    }

    internal static void Announce(LockWaitNotice notice) => Stdio.Error(notice.Message);
}
