using Xunit;

namespace Vdisk.Interop.Support;

/// <summary>Shorthands for running vdisk and QEMU's tools, and the checks of a result every format's tests make.</summary>
internal static class Qemu
{
    public static RunResult Img(params string[] args) => Programs.Run("qemu-img", args);
    public static RunResult Io(params string[] args) => Programs.Run("qemu-io", args);
    public static RunResult Vdisk(params string[] args) => Programs.Run(Programs.Vdisk, args);

    /// <summary>
    /// qemu-img create (or measure, amend) of an image with a LUKS header, made again while QEMU's
    /// own PBKDF2 benchmark fails (<see cref="RetryWhileQemuPbkdfTimingFails{T}"/>).
    /// </summary>
    /// <remarks>
    /// Each successful run also costs QEMU's PBKDF2 timing, one to two seconds of CPU whatever the
    /// iter-time. A create (<c>create ... IMG SIZE</c>) whose arguments other than IMG were run before
    /// therefore copies the image QEMU made then: the bytes are still QEMU's, and the suite does not
    /// spend minutes timing PBKDF2.
    /// </remarks>
    public static RunResult ImgCreateEncrypted(params string[] args)
    {
        if (args is not ["create", .., var image, _]) return ImgCreateEncryptedUncached(args);
        string key = string.Join('\0', args[..^2]) + "\0" + args[^1];
        bool madeByThisCall = false;
        var made = MadeOnce.GetOrAdd(key, _ => new Lazy<(RunResult, string?)>(() =>
        {
            madeByThisCall = true;
            var r = ImgCreateEncryptedUncached(args);
            if (r.ExitCode != 0) return (r, null);
            string pristine = Path.Combine(PristineImages.Value.Path, Interlocked.Increment(ref _pristineCount) + Path.GetExtension(image));
            File.Copy(image, pristine);
            return (r, pristine);
        })).Value;
        if (madeByThisCall) return made.Result;
        // A failed create is run again (it is its own test); a create over an existing file too.
        if (made.Pristine is null || File.Exists(image)) return ImgCreateEncryptedUncached(args);
        File.Copy(made.Pristine, image);
        return made.Result;
    }

    private static RunResult ImgCreateEncryptedUncached(string[] args) => RetryWhileQemuPbkdfTimingFails(() => Img(args), r => r);

    /// <summary>
    /// Runs <paramref name="run"/> again while QEMU gave up in its PBKDF2 benchmark. QEMU times its
    /// first round of 2^15 iterations on the thread's CPU clock and fails with "Unable to get accurate
    /// CPU usage" when that round measured 0 ms, which a VM's tick-granular thread clock yields at
    /// random: a third of the time on a 2-core dev VM, and 20 times in a row once under CI on a faster
    /// CPU. That is QEMU's benchmark failing, not the operation under test, and a failed attempt costs
    /// milliseconds, so attempts go on for up to a minute rather than a fixed count; a clock that never
    /// advances still fails the test with QEMU's message.
    /// </summary>
    public static T RetryWhileQemuPbkdfTimingFails<T>(Func<T> run, Func<T, RunResult> resultOf)
    {
        long start = System.Diagnostics.Stopwatch.GetTimestamp();
        T r = run();
        while (IsQemuPbkdfTimingFailure(resultOf(r)) && System.Diagnostics.Stopwatch.GetElapsedTime(start) < PbkdfRetryBudget)
            r = run();
        return r;
    }

    private static readonly TimeSpan PbkdfRetryBudget = TimeSpan.FromMinutes(1);

    private static bool IsQemuPbkdfTimingFailure(RunResult r) =>
        r.ExitCode != 0 && r.Stderr.Contains("Unable to get accurate CPU usage", StringComparison.Ordinal);

    private static int _pristineCount;
    private static readonly System.Collections.Concurrent.ConcurrentDictionary<string, Lazy<(RunResult Result, string? Pristine)>> MadeOnce = new();
    private static readonly Lazy<TempDir> PristineImages = new(() =>
    {
        var dir = new TempDir();
        AppDomain.CurrentDomain.ProcessExit += (_, _) => dir.Dispose();
        return dir;
    });

    public static RunResult Ok(RunResult r)
    {
        Assert.True(r.ExitCode == 0, r.ToString());
        return r;
    }

    /// <summary>qemu-img check must find no errors and no leaks.</summary>
    public static void AssertClean(string image)
    {
        var r = Img("check", image);
        Assert.True(r.ExitCode == 0 && r.Stdout.StartsWith("No errors were found on the image.", StringComparison.Ordinal), r.ToString());
    }

    public static void AssertIdentical(string a, string b)
    {
        var r = Img("compare", a, b);
        Assert.True(r.ExitCode == 0 && r.Stdout.Contains("Images are identical."), r.ToString());
    }

    /// <summary>qemu-io/vdisk io arguments: -c before each command.</summary>
    public static string[] Commands(IEnumerable<string> commands) => commands.SelectMany(c => new[] { "-c", c }).ToArray();
}
