using System.Diagnostics;
using System.Net.Sockets;
using System.Text;

namespace Vdisk.Interop.Support;

/// <summary>
/// A running storage daemon: <c>vdisk serve</c> or <c>qemu-storage-daemon</c> with the same
/// arguments. Start waits until the given sockets accept connections; Dispose kills it.
/// </summary>
public sealed class Daemon : IDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _stderr = new();

    private Daemon(Process process)
    {
        _process = process;
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (_stderr) _stderr.Append(e.Data).Append('\n'); };
        process.OutputDataReceived += (_, _) => { };
        process.BeginErrorReadLine();
        process.BeginOutputReadLine();
    }

    public int Pid => _process.Id;
    public bool HasExited => _process.HasExited;
    public int ExitCode => _process.ExitCode;

    public string Stderr
    {
        get
        {
            lock (_stderr) return _stderr.ToString();
        }
    }

    /// <summary>vdisk serve ARGS.</summary>
    public static Daemon Vdisk(IEnumerable<string> args, params string[] readySockets) => Start(Programs.Vdisk, ["serve", .. args], readySockets);

    /// <summary>qemu-storage-daemon ARGS.</summary>
    public static Daemon Qsd(IEnumerable<string> args, params string[] readySockets) => Start("qemu-storage-daemon", args, readySockets);

    public static Daemon Start(string program, IEnumerable<string> args, params string[] readySockets)
    {
        var p = Process.Start(Programs.StartInfo(program, args))!;
        p.StandardInput.Close();
        var daemon = new Daemon(p);
        try
        {
            daemon.WaitReady(readySockets);
        }
        catch
        {
            daemon.Dispose();
            throw;
        }
        return daemon;
    }

    private void WaitReady(string[] sockets)
    {
        var watch = Stopwatch.StartNew();
        var pending = new List<string>(sockets);
        while (pending.Count > 0)
        {
            if (_process.HasExited)
            {
                _process.WaitForExit();
                throw new InvalidOperationException($"daemon exited with {_process.ExitCode}: {Stderr}");
            }
            if (watch.Elapsed > TimeSpan.FromSeconds(30)) throw new TimeoutException($"daemon never listened on {string.Join(", ", pending)}: {Stderr}");
            pending.RemoveAll(Accepts);
            if (pending.Count > 0) Thread.Sleep(10);
        }
    }

    private static bool Accepts(string path)
    {
        if (!File.Exists(path)) return false;
        try
        {
            using var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            s.Connect(new UnixDomainSocketEndPoint(path));
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }

    /// <summary>Sends a signal (SIGTERM by default) and waits for the exit code.</summary>
    public int Signal(string signal = "TERM", int timeoutMs = 30_000)
    {
        Programs.Run("kill", "-" + signal, Pid.ToString(System.Globalization.CultureInfo.InvariantCulture));
        if (!_process.WaitForExit(timeoutMs)) throw new TimeoutException("daemon did not exit after SIG" + signal);
        _process.WaitForExit();
        return _process.ExitCode;
    }

    /// <summary>Waits for the daemon to exit by itself.</summary>
    public int WaitForExit(int timeoutMs = 30_000)
    {
        if (!_process.WaitForExit(timeoutMs)) throw new TimeoutException("daemon did not exit");
        _process.WaitForExit();
        return _process.ExitCode;
    }

    public void Dispose()
    {
        try
        {
            if (!_process.HasExited) _process.Kill(true);
            _process.WaitForExit(10_000);
        }
        catch (InvalidOperationException) { }
        _process.Dispose();
    }
}
