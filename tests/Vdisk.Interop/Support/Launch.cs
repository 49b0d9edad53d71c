using System.Diagnostics;
using System.Net.Sockets;
using System.Text;

namespace Vdisk.Interop.Support;

/// <summary>
/// Starts a long-running program and tells, without guessing from timing, whether it came up:
/// it is up once its last socket answers from its main loop (a QMP reply for VMs and daemons
/// whose monitor comes last on the command line, the NBD greeting for qemu-nbd, which listens
/// before it opens the image), and it failed if it exits first.
/// </summary>
public sealed class Launch : IDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _stderr = new();

    private Launch(Process process)
    {
        _process = process;
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (_stderr) _stderr.Append(e.Data).Append('\n'); };
        process.OutputDataReceived += (_, _) => { };
        process.BeginErrorReadLine();
        process.BeginOutputReadLine();
    }

    public int Pid => _process.Id;

    /// <summary>"ok" with the running process, or the failure's outcome text (and null).</summary>
    public static (string Outcome, Launch? Running) Start(string program, IEnumerable<string> args, string readySocket, bool qmp)
    {
        var p = Process.Start(Programs.StartInfo(program, args))!;
        p.StandardInput.Close();
        var launch = new Launch(p);
        var watch = Stopwatch.StartNew();
        while (true)
        {
            if (p.HasExited)
            {
                p.WaitForExit();
                int exitCode = p.ExitCode;
                string stderr;
                lock (launch._stderr) stderr = launch._stderr.ToString();
                launch.Dispose();
                return (Outcome.Of(new RunResult(exitCode == 0 ? 1 : exitCode, "", stderr)), null);
            }
            if (Answers(readySocket, qmp)) return ("ok", launch);
            if (watch.Elapsed > TimeSpan.FromSeconds(60))
            {
                launch.Dispose();
                throw new TimeoutException($"{program} neither came up nor exited");
            }
            Thread.Sleep(10);
        }
    }

    private static bool Answers(string path, bool qmp)
    {
        if (!File.Exists(path)) return false;
        try
        {
            using var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            s.Connect(new UnixDomainSocketEndPoint(path));
            s.ReceiveTimeout = 60_000;
            if (!qmp)
            {
                var greeting = new byte[18];
                int got = 0;
                while (got < greeting.Length)
                {
                    int n = s.Receive(greeting, got, greeting.Length - got, SocketFlags.None);
                    if (n == 0) return false;
                    got += n;
                }
                return true;
            }
            // The greeting and a reply come from the main loop, which runs only after start-up.
            var buffer = new byte[4096];
            var text = new StringBuilder();
            s.Send("{\"execute\":\"qmp_capabilities\"}\n"u8);
            while (!text.ToString().Contains("\"return\"", StringComparison.Ordinal))
            {
                int n = s.Receive(buffer);
                if (n == 0) return false;
                text.Append(Encoding.UTF8.GetString(buffer, 0, n));
            }
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
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
