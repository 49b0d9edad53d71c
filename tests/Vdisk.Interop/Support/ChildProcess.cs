using System.Diagnostics;
using System.Text;

namespace Vdisk.Interop.Support;

/// <summary>
/// A program the tests started, with stdout and stderr captured byte for byte as they arrive:
/// nothing is split into lines and rebuilt, so a missing final newline, a carriage return or a
/// stray byte is seen exactly as a user's terminal would see it. Waits are on conditions (output
/// arrived, the process exited), each with a deadline; none is a fixed sleep. The one way the
/// interop tests run and watch programs.
/// </summary>
public sealed class ChildProcess : IDisposable
{
    private readonly Process _process;
    private readonly object _gate = new();
    private readonly MemoryStream _stdout = new();
    private readonly MemoryStream _stderr = new();
    private readonly Task _pumps;
    private int _openStreams = 2;
    private bool _exited;

    private ChildProcess(Process process, bool keepStdinOpen)
    {
        _process = process;
        process.EnableRaisingEvents = true;
        process.Exited += (_, _) => Signal(() => _exited = true);
        process.Start();
        if (!keepStdinOpen) process.StandardInput.Close();
        _pumps = Task.WhenAll(
            Pump(process.StandardOutput.BaseStream, _stdout),
            Pump(process.StandardError.BaseStream, _stderr));
        // The process may have exited before the handler was attached to a started process.
        if (process.HasExited) Signal(() => _exited = true);
    }

    /// <summary>Starts <paramref name="file"/> with <paramref name="args"/>; stdin is closed unless kept open.</summary>
    public static ChildProcess Start(string file, IEnumerable<string> args, IDictionary<string, string>? env = null, bool keepStdinOpen = false) =>
        new(new Process { StartInfo = Programs.StartInfo(file, args, env) }, keepStdinOpen);

    public int Pid => _process.Id;
    public bool HasExited => _process.HasExited;
    public int ExitCode => _process.ExitCode;

    /// <summary>The program's stdin (only when started with keepStdinOpen).</summary>
    public StreamWriter StandardInput => _process.StandardInput;

    /// <summary>Everything written to stdout so far, decoded as UTF-8.</summary>
    public string Stdout => Encoding.UTF8.GetString(StdoutBytes);

    /// <summary>Everything written to stderr so far, decoded as UTF-8.</summary>
    public string Stderr => Encoding.UTF8.GetString(StderrBytes);

    public byte[] StdoutBytes
    {
        get { lock (_gate) return _stdout.ToArray(); }
    }

    public byte[] StderrBytes
    {
        get { lock (_gate) return _stderr.ToArray(); }
    }

    private async Task Pump(Stream from, MemoryStream into)
    {
        var buffer = new byte[64 * 1024];
        try
        {
            int n;
            while ((n = await from.ReadAsync(buffer).ConfigureAwait(false)) > 0)
                Signal(() => into.Write(buffer, 0, n));
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException)
        {
            // The pipe went away with the process.
        }
        finally
        {
            Signal(() => _openStreams--);
        }
    }

    private void Signal(Action change)
    {
        lock (_gate)
        {
            change();
            Monitor.PulseAll(_gate);
        }
    }

    /// <summary>
    /// Waits until <paramref name="condition"/> holds for (stdout, stderr) and returns; throws if
    /// the program exits first or <paramref name="timeout"/> passes, with what it printed.
    /// </summary>
    public void WaitFor(Func<string, string, bool> condition, string what, TimeSpan? timeout = null)
    {
        if (!WaitForOrExit(condition, what, timeout))
            throw new InvalidOperationException($"exited with {_process.ExitCode} before it {what}\nstdout: {Stdout}\nstderr: {Stderr}");
    }

    /// <summary>
    /// Waits until <paramref name="condition"/> holds for (stdout, stderr), true, or the program
    /// has exited and its output ended without it, false; throws when <paramref name="timeout"/> passes.
    /// </summary>
    public bool WaitForOrExit(Func<string, string, bool> condition, string what, TimeSpan? timeout = null)
    {
        var deadline = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(60));
        lock (_gate)
        {
            while (true)
            {
                string stdout = Encoding.UTF8.GetString(_stdout.GetBuffer(), 0, (int)_stdout.Length);
                string stderr = Encoding.UTF8.GetString(_stderr.GetBuffer(), 0, (int)_stderr.Length);
                if (condition(stdout, stderr)) return true;
                if (_exited && _openStreams == 0) return false;
                var left = deadline - DateTime.UtcNow;
                if (left <= TimeSpan.Zero) throw new TimeoutException($"never {what}\nstdout: {stdout}\nstderr: {stderr}");
                Monitor.Wait(_gate, left);
            }
        }
    }

    public void WaitForStdout(string text, TimeSpan? timeout = null) =>
        WaitFor((stdout, _) => stdout.Contains(text, StringComparison.Ordinal), $"printed '{text}' on stdout", timeout);

    public void WaitForStderr(string text, TimeSpan? timeout = null) =>
        WaitFor((_, stderr) => stderr.Contains(text, StringComparison.Ordinal), $"printed '{text}' on stderr", timeout);

    /// <summary>True once the program has exited, waiting at most <paramref name="timeout"/> for it.</summary>
    public bool WaitForExit(TimeSpan timeout) => _process.WaitForExit(timeout);

    /// <summary>
    /// Waits for the program to exit and for its output to end, then returns exit code and the
    /// exact output. Kills it and throws if that takes longer than <paramref name="timeout"/>.
    /// </summary>
    public RunResult Result(TimeSpan? timeout = null)
    {
        var limit = timeout ?? TimeSpan.FromSeconds(120);
        // A descendant that inherited the pipes can hold them open after the program exits.
        if (!_process.WaitForExit(limit) || !_pumps.Wait(limit))
        {
            Kill();
            throw new TimeoutException($"{_process.StartInfo.FileName} {string.Join(' ', _process.StartInfo.ArgumentList)} did not finish\nstderr: {Stderr}");
        }
        _process.WaitForExit();
        return new RunResult(_process.ExitCode, Stdout, Stderr);
    }

    /// <summary>SIGKILL to the program and its descendants, then waits until they are gone.</summary>
    public void Kill()
    {
        try
        {
            if (!_process.HasExited) _process.Kill(entireProcessTree: true);
            _process.WaitForExit(10_000);
        }
        catch (InvalidOperationException)
        {
            // Already reaped.
        }
    }

    public void Dispose()
    {
        Kill();
        _process.Dispose();
    }
}
