namespace Vdisk.Interop.Support;

/// <summary>A scratch directory removed after the test.</summary>
public sealed class TempDir : IDisposable
{
    public string Path { get; } = Directory.CreateTempSubdirectory("vdisk-test-").FullName;

    public string File(string name) => System.IO.Path.Combine(Path, name);

    /// <summary>Creates a raw image of <paramref name="size"/> bytes with qemu-img.</summary>
    public string RawImage(string name = "disk.raw", long size = 1 << 20)
    {
        var path = File(name);
        var r = Programs.Run("qemu-img", "create", "-q", "-f", "raw", path, size.ToString(System.Globalization.CultureInfo.InvariantCulture));
        if (r.ExitCode != 0) throw new InvalidOperationException(r.ToString());
        return path;
    }

    public void Dispose()
    {
        try { Directory.Delete(Path, true); } catch (IOException) { }
    }
}

/// <summary>What a user sees from an open attempt: success, or the lock error's core text.</summary>
public static class Outcome
{
    private static readonly System.Text.RegularExpressions.Regex LockError =
        new("Failed to get (shared )?\"[a-z ]+\" lock", System.Text.RegularExpressions.RegexOptions.Compiled);

    public static string Of(RunResult r)
    {
        if (r.ExitCode == 0) return "ok";
        var m = LockError.Match(r.Stderr);
        if (m.Success) return m.Value + (r.Stderr.Contains("Is another process using the image") ? " +hint" : "");
        return $"failed({r.Stderr.Trim()})";
    }
}
