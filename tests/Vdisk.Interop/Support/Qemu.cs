using Xunit;

namespace Vdisk.Interop.Support;

/// <summary>Shorthands for running vdisk and QEMU's tools, and the checks of a result every format's tests make.</summary>
internal static class Qemu
{
    public static RunResult Img(params string[] args) => Programs.Run("qemu-img", args);
    public static RunResult Io(params string[] args) => Programs.Run("qemu-io", args);
    public static RunResult Vdisk(params string[] args) => Programs.Run(Programs.Vdisk, args);

    /// <summary>
    /// qemu-img create of an image with a LUKS header. QEMU times PBKDF2 on the thread's CPU clock
    /// and gives up with "Unable to get accurate CPU usage" when a timed round measured 0 ms, which
    /// the tick-granular thread clock of a VM yields at random: that is QEMU's benchmark failing,
    /// not the create under test, so such an attempt is made again (at most 20 times; an attempt takes milliseconds).
    /// </summary>
    public static RunResult ImgCreateEncrypted(params string[] args)
    {
        var r = Img(args);
        for (int attempt = 1; attempt < 20 && r.ExitCode != 0 && r.Stderr.Contains("Unable to get accurate CPU usage", StringComparison.Ordinal); attempt++)
            r = Img(args);
        return r;
    }

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
