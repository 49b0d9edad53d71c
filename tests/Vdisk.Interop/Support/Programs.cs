using System.Diagnostics;

namespace Vdisk.Interop.Support;

/// <summary>The programs the interop tests run: vdisk itself, the LockProbe helper and QEMU's tools.</summary>
public static class Programs
{
    private static readonly Lazy<string> s_repoRoot = new(() =>
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !System.IO.File.Exists(Path.Combine(dir.FullName, "VdiskSuite.slnx"))) dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException("repository root not found");
    });

    public static string RepoRoot => s_repoRoot.Value;

    /// <summary>vdisk: $VDISK_BIN, else the newest of the NativeAOT build in bin/ and the Release/Debug builds.</summary>
    public static string Vdisk
    {
        get
        {
            var env = Environment.GetEnvironmentVariable("VDISK_BIN");
            if (!string.IsNullOrEmpty(env)) return env;
            // The newest build wins, so a stale NativeAOT binary never hides a fresh change.
            var candidates = new[]
            {
                Path.Combine(RepoRoot, "bin", "vdisk"),
                Path.Combine(RepoRoot, "src", "Vdisk.Cli", "bin", "Release", "net10.0", "linux-x64", "vdisk"),
                Path.Combine(RepoRoot, "src", "Vdisk.Cli", "bin", "Debug", "net10.0", "linux-x64", "vdisk"),
            };
            return candidates.Where(System.IO.File.Exists).OrderByDescending(System.IO.File.GetLastWriteTimeUtc).FirstOrDefault()
                ?? throw new InvalidOperationException("vdisk binary not found: run scripts/setup.sh or build src/Vdisk.Cli");
        }
    }

    /// <summary>
    /// A symlink named <paramref name="tool"/> (qemu-nbd, say) to the vdisk under test, so that
    /// vdisk acts as that tool; one directory per test process.
    /// </summary>
    public static string VdiskAs(string tool)
    {
        string dir = Path.Combine(Path.GetTempPath(), $"vdisk-links-{Environment.ProcessId}");
        Directory.CreateDirectory(dir);
        string link = Path.Combine(dir, tool);
        if (new FileInfo(link).LinkTarget != Vdisk)
        {
            string fresh = link + "." + Guid.NewGuid().ToString("N");
            System.IO.File.CreateSymbolicLink(fresh, Vdisk);
            System.IO.File.Move(fresh, link, overwrite: true);
        }
        return link;
    }

    public static string LockProbe => Path.Combine(AppContext.BaseDirectory, "LockProbe");

    public static RunResult Run(string file, params string[] args) => Run(file, args, null);

    /// <summary>Runs a program to its end with stdin closed; its output exactly as written.</summary>
    public static RunResult Run(string file, IEnumerable<string> args, IDictionary<string, string>? env, TimeSpan? timeout = null)
    {
        using var p = ChildProcess.Start(file, args, env);
        return p.Result(timeout);
    }

    public static ProcessStartInfo StartInfo(string file, IEnumerable<string> args, IDictionary<string, string>? env = null)
    {
        var psi = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (var a in args) psi.ArgumentList.Add(a);
        if (env is not null)
            foreach (var (k, v) in env) psi.Environment[k] = v;
        return psi;
    }
}

public sealed record RunResult(int ExitCode, string Stdout, string Stderr)
{
    public override string ToString() => $"exit {ExitCode}\nstdout: {Stdout}\nstderr: {Stderr}";
}
