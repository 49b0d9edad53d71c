using System.Diagnostics;
using Vdisk.Interop.Support;
using Xunit;

namespace Vdisk.Interop.Qcow2;

/// <summary>
/// Runs one qemu-img command line with qemu-img in one directory and with vdisk in another,
/// both prepared the same way, and compares what a script would see: stdout and stderr byte for
/// byte (progress lines with their carriage returns included; "qemu-img:" reads "vdisk:"), the
/// exit code, and the files left behind. File names are relative to the directories.
/// </summary>
internal sealed class SideBySide : IDisposable
{
    private readonly TempDir _theirs = new();
    private readonly TempDir _mine = new();

    /// <summary>Two directories, each prepared by <paramref name="setup"/> (given the directory).</summary>
    public SideBySide(Action<string>? setup = null)
    {
        setup?.Invoke(_theirs.Path);
        setup?.Invoke(_mine.Path);
    }

    public string TheirDir => _theirs.Path;
    public string MyDir => _mine.Path;

    /// <summary>Runs qemu-img and vdisk with the same arguments; asserts the same outcome and output.</summary>
    public (RunResult Theirs, RunResult Mine) Same(params string[] args)
    {
        var (theirs, mine) = Run(args);
        AssertSameOutput(theirs, mine);
        return (theirs, mine);
    }

    /// <summary>Runs qemu-img and vdisk with the same arguments.</summary>
    public (RunResult Theirs, RunResult Mine) Run(params string[] args) =>
        (RunIn(_theirs.Path, "qemu-img", args), RunIn(_mine.Path, Programs.Vdisk, args));

    public static void AssertSameOutput(RunResult theirs, RunResult mine)
    {
        string context = $"qemu-img: {theirs}\nvdisk: {mine}";
        Assert.True(theirs.ExitCode == mine.ExitCode, $"exit codes differ\n{context}");
        Assert.True(theirs.Stdout == mine.Stdout, $"stdout differs\n{context}");
        string expected = theirs.Stderr.Replace("qemu-img: ", "vdisk: ", StringComparison.Ordinal)
            .Replace("Try 'qemu-img --help'", "Try 'vdisk --help'", StringComparison.Ordinal);
        Assert.True(expected == mine.Stderr, $"stderr differs\n{context}");
    }

    /// <summary>The file is in both directories or in neither, with the same length.</summary>
    public void AssertSameFile(string name)
    {
        var a = new FileInfo(Path.Combine(_theirs.Path, name));
        var b = new FileInfo(Path.Combine(_mine.Path, name));
        Assert.True(a.Exists == b.Exists, $"{name}: exists after qemu-img: {a.Exists}, after vdisk: {b.Exists}");
        if (a.Exists) Assert.True(a.Length == b.Length, $"{name}: {a.Length} bytes after qemu-img, {b.Length} after vdisk");
    }

    /// <summary>Both images read the same (qemu-img compare) and map the same ranges the same way (qemu-img map).</summary>
    public void AssertSameImage(string name, bool compareHostOffsets = true)
    {
        string a = Path.Combine(_theirs.Path, name), b = Path.Combine(_mine.Path, name);
        Qemu.AssertIdentical(a, b);
        Assert.Equal(Map(a, compareHostOffsets), Map(b, compareHostOffsets));
    }

    /// <summary>qemu-img info of both images reads the same, the space used on disk aside.</summary>
    public void AssertSameInfo(string name, string? format = null)
    {
        string Info(string dir)
        {
            string[] args = format is null ? ["info", name] : ["info", "-f", format, name];
            var lines = Qemu.Ok(RunIn(dir, "qemu-img", args)).Stdout.Split('\n');
            return string.Join('\n', lines.Where(l => !l.StartsWith("disk size:", StringComparison.Ordinal)));
        }
        Assert.Equal(Info(_theirs.Path), Info(_mine.Path));
    }

    private static string Map(string image, bool withOffsets)
    {
        var r = Qemu.Ok(Qemu.Img("map", "--output=json", image));
        return withOffsets ? r.Stdout : string.Join("\n", GuestMap(r.Stdout));
    }

    /// <summary>
    /// The map without host offsets, adjacent ranges of the same kind joined. qemu-img map joins
    /// ranges only where their host offsets also run on, so where the host layout differs (QEMU's
    /// commit is a mirror job with requests in flight in any order) the same guest view can come
    /// out split differently; what a guest sees must not.
    /// </summary>
    private static List<string> GuestMap(string json)
    {
        var ranges = new List<(long Start, long Length, string Kind)>();
        foreach (var entry in System.Text.Json.JsonDocument.Parse(json).RootElement.EnumerateArray())
        {
            long start = entry.GetProperty("start").GetInt64(), length = entry.GetProperty("length").GetInt64();
            string kind = string.Join(",", entry.EnumerateObject()
                .Where(p => p.Name is not ("start" or "length" or "offset"))
                .Select(p => $"{p.Name}={p.Value.GetRawText()}"));
            if (ranges.Count > 0 && ranges[^1].Kind == kind && ranges[^1].Start + ranges[^1].Length == start)
                ranges[^1] = ranges[^1] with { Length = ranges[^1].Length + length };
            else
                ranges.Add((start, length, kind));
        }
        return ranges.Select(r => $"{r.Start}+{r.Length}: {r.Kind}").ToList();
    }

    /// <summary>Runs a program in a directory, keeping stdout and stderr exactly as written.</summary>
    public static RunResult RunIn(string directory, string program, IEnumerable<string> args)
    {
        var psi = Programs.StartInfo(program, args);
        psi.WorkingDirectory = directory;
        using var p = new Process { StartInfo = psi };
        p.Start();
        p.StandardInput.Close();
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(TimeSpan.FromSeconds(120)))
        {
            p.Kill(true);
            throw new TimeoutException($"{program} {string.Join(' ', args)} did not finish");
        }
        p.WaitForExit();
        return new RunResult(p.ExitCode, stdout.GetAwaiter().GetResult(), stderr.GetAwaiter().GetResult());
    }

    public void Dispose()
    {
        _theirs.Dispose();
        _mine.Dispose();
    }
}
