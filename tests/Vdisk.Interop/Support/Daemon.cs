using System.Net.Sockets;

namespace Vdisk.Interop.Support;

/// <summary>
/// A running storage daemon: <c>vdisk serve</c> or <c>qemu-storage-daemon</c> with the same
/// arguments. Start waits until the given sockets accept connections; Dispose kills it.
/// </summary>
public sealed class Daemon : IDisposable
{
    private readonly ChildProcess _process;
    private readonly string _program;

    private Daemon(ChildProcess process, string program)
    {
        _process = process;
        _program = program;
    }

    public int Pid => _process.Pid;
    public bool HasExited => _process.HasExited;
    public int ExitCode => _process.ExitCode;

    /// <summary>
    /// Runs <paramref name="client"/> against the daemon; a failure says whether the daemon is
    /// still running and what it printed (a refused connection alone does not tell which side went away).
    /// </summary>
    public T WhileRunning<T>(Func<T> client)
    {
        try
        {
            return client();
        }
        catch (Exception e)
        {
            throw new Xunit.Sdk.XunitException($"{Whereabouts()}: {e.Message}; stderr: {Stderr}");
        }
    }

    /// <summary>"PROGRAM (pid N, exited with C)" or "(…, still running)", after a client of the daemon failed.</summary>
    private string Whereabouts()
    {
        string state = _process.WaitForExit(TimeSpan.FromSeconds(1)) ? $"exited with {_process.Result().ExitCode}" : "still running";
        return $"{Path.GetFileName(_program)} (pid {Pid}, {state})";
    }

    /// <summary>What the daemon printed on stderr so far, byte for byte.</summary>
    public string Stderr => _process.Stderr;

    /// <summary>vdisk serve ARGS.</summary>
    public static Daemon Vdisk(IEnumerable<string> args, params string[] readySockets) => Start(Programs.Vdisk, ["serve", .. args], readySockets);

    /// <summary>qemu-storage-daemon ARGS.</summary>
    public static Daemon Qsd(IEnumerable<string> args, params string[] readySockets) => Start("qemu-storage-daemon", args, readySockets);

    public static Daemon Start(string program, IEnumerable<string> args, params string[] readySockets)
    {
        var daemon = new Daemon(ChildProcess.Start(program, args), program);
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
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        var pending = new List<string>(sockets);
        while (true)
        {
            pending.RemoveAll(Accepts);
            if (pending.Count == 0) return;
            if (_process.HasExited)
            {
                var r = _process.Result();
                throw new InvalidOperationException($"daemon exited with {r.ExitCode}: {r.Stderr}");
            }
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"daemon never listened on {string.Join(", ", pending)}: {Stderr}");
            // The pause between probes ends early if the daemon exits.
            _process.WaitForExit(TimeSpan.FromMilliseconds(10));
        }
    }

    private static bool Accepts(string path)
    {
        if (!File.Exists(path)) return false;
        try
        {
            using var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            s.Connect(new UnixDomainSocketEndPoint(path));
            // Hang up only after the first byte of the greeting (QMP and NBD servers speak
            // first): qemu-storage-daemon 7.2 sometimes died with SIGSEGV, after GLib's
            // "g_source_unref: assertion 'source != NULL' failed", when a client hung up on its
            // monitor at once. A server that stays silent is still counted as accepting.
            s.ReceiveTimeout = 5000;
            try
            {
                s.Receive(new byte[1]);
            }
            catch (SocketException)
            {
            }
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }

    /// <summary>
    /// A QMP client on the daemon's monitor socket. A refused or failed connection names the
    /// daemon and says whether it is still running and what it printed, so that a failure in CI
    /// tells which daemon went away and why.
    /// </summary>
    public QmpClient Monitor(string socket)
    {
        try
        {
            return new QmpClient(socket);
        }
        catch (Exception e) when (e is SocketException or IOException)
        {
            throw new IOException($"{Whereabouts()}: {e.Message}; stderr: {Stderr}", e);
        }
    }

    /// <summary>Sends a signal (SIGTERM by default) and waits for the exit code.</summary>
    public int Signal(string signal = "TERM", int timeoutMs = 30_000)
    {
        Programs.Run("kill", "-" + signal, Pid.ToString(System.Globalization.CultureInfo.InvariantCulture));
        return WaitForExit(timeoutMs, "daemon did not exit after SIG" + signal);
    }

    /// <summary>Waits for the daemon to exit by itself.</summary>
    public int WaitForExit(int timeoutMs = 30_000) => WaitForExit(timeoutMs, "daemon did not exit");

    private int WaitForExit(int timeoutMs, string failure)
    {
        if (!_process.WaitForExit(TimeSpan.FromMilliseconds(timeoutMs))) throw new TimeoutException(failure);
        return _process.Result().ExitCode;
    }

    public void Dispose() => _process.Dispose();
}
