using System.Text.Json;
using Vdisk.Inspection;

namespace Vdisk.Interop.Support;

/// <summary>Runs <c>vdisk locks</c> and the QEMU tool behind each access mode.</summary>
public static class LocksCli
{
    /// <summary><c>vdisk locks --output json -f FORMAT IMAGE</c>: the run and the image's JSON object.</summary>
    public static (RunResult Run, JsonElement Image) Json(string image, string format = "raw", params string[] extra)
    {
        var r = Programs.Run(Programs.Vdisk, ["locks", "--output", "json", "-f", format, .. extra, image], null);
        if (r.ExitCode is not (0 or 1)) throw new InvalidOperationException(r.ToString());
        var root = JsonDocument.Parse(r.Stdout).RootElement;
        return (r, root.GetProperty("images")[0].Clone());
    }

    /// <summary>The verdict object for <paramref name="mode"/> in an image's JSON.</summary>
    public static JsonElement Verdict(JsonElement image, AccessMode mode) =>
        image.GetProperty("verdicts").EnumerateArray().Single(v => v.GetProperty("mode").GetString() == AccessModes.Name(mode));

    public static List<string> Names(JsonElement array) => array.EnumerateArray().Select(e => e.GetString()!).ToList();

    /// <summary>Opens <paramref name="image"/> the way <paramref name="mode"/> is defined: with the real QEMU tool.</summary>
    public static RunResult TryWithQemu(AccessMode mode, string format, string image) => mode switch
    {
        AccessMode.Write => Programs.Run("qemu-io", "-f", format, image, "-c", "read 0 512"),
        AccessMode.Read => Programs.Run("qemu-io", "-r", "-f", format, image, "-c", "read 0 512"),
        AccessMode.ForceShare => Programs.Run("qemu-io", "-r", "-U", "-f", format, image, "-c", "read 0 512"),
        AccessMode.Info => Programs.Run("qemu-img", "info", "-f", format, image),
        // Resizing to the current size changes nothing but takes resize's locks.
        AccessMode.Resize => Programs.Run("qemu-img", "resize", "-f", format, image, "1M"),
        _ => throw new ArgumentOutOfRangeException(nameof(mode)),
    };
}
