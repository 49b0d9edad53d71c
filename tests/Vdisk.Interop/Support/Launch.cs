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
    private readonly ChildProcess _process;

    private Launch(ChildProcess process) => _process = process;

    public int Pid => _process.Pid;

    /// <summary>"ok" with the running process, or the failure's outcome text (and null).</summary>
    public static (string Outcome, Launch? Running) Start(string program, IEnumerable<string> args, string readySocket, bool qmp)
    {
        var launch = new Launch(ChildProcess.Start(program, args));
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (true)
        {
            if (launch._process.HasExited)
            {
                var r = launch._process.Result();
                launch.Dispose();
                return (Outcome.Of(r with { ExitCode = r.ExitCode == 0 ? 1 : r.ExitCode }), null);
            }
            if (Answers(readySocket, qmp)) return ("ok", launch);
            if (DateTime.UtcNow > deadline)
            {
                launch.Dispose();
                throw new TimeoutException($"{program} neither came up nor exited");
            }
            // The pause between probes ends early if the program exits.
            launch._process.WaitForExit(TimeSpan.FromMilliseconds(10));
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

    public void Dispose() => _process.Dispose();
}
