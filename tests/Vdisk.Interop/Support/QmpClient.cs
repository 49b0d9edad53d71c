using System.Net.Sockets;
using System.Text;
using System.Text.RegularExpressions;

namespace Vdisk.Interop.Support;

/// <summary>A line-oriented QMP client for tests: sends raw text, returns the reply line; events are kept apart.</summary>
public sealed class QmpClient : IDisposable
{
    private Socket _socket;
    private readonly byte[] _buffer = new byte[65536];
    private readonly StringBuilder _pending = new();

    public QmpClient(string path)
    {
        // A monitor serves one client at a time (qemu-storage-daemon's chardev does): a connection
        // made while the server is still closing the previous one (Daemon's readiness probe) was
        // seen closed without a greeting in CI once; a client then connects again, as a script would.
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (true)
        {
            _socket = OpenSocket(path);
            string? greeting;
            try
            {
                greeting = ReadLine();
            }
            catch (SocketException)
            {
                greeting = null;
            }
            if (greeting is not null)
            {
                Greeting = greeting;
                return;
            }
            _socket.Dispose();
            _pending.Clear();
            if (DateTime.UtcNow > deadline) throw new IOException("no greeting");
        }
    }

    private static Socket OpenSocket(string path)
    {
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        socket.Connect(new UnixDomainSocketEndPoint(path));
        socket.ReceiveTimeout = 30_000;
        socket.SendTimeout = 30_000;
        return socket;
    }

    public string Greeting { get; }

    /// <summary>Events received so far, in order.</summary>
    public List<string> Events { get; } = new();

    /// <summary>Everything received after the greeting, in order (events and replies).</summary>
    public List<string> Transcript { get; } = new();

    /// <summary>A client that already negotiated capabilities.</summary>
    public static QmpClient Connect(string path)
    {
        var c = new QmpClient(path);
        c.Execute("{\"execute\":\"qmp_capabilities\"}");
        return c;
    }

    /// <summary>Sends <paramref name="text"/> and returns the next non-event line.</summary>
    public string Execute(string text)
    {
        Send(text + "\n");
        return NextReply();
    }

    public void Send(string text) => _socket.Send(Encoding.UTF8.GetBytes(text));

    public void SendBytes(byte[] data) => _socket.Send(data);

    public string NextReply()
    {
        while (true)
        {
            string line = ReadLine() ?? throw new EndOfStreamException("QMP connection closed");
            Transcript.Add(line);
            if (line.Contains("\"event\": ", StringComparison.Ordinal) && line.StartsWith("{\"timestamp\"", StringComparison.Ordinal)) Events.Add(line);
            else return line;
        }
    }

    /// <summary>Reads one line, or null at end of stream.</summary>
    public string? ReadLine()
    {
        while (true)
        {
            string text = _pending.ToString();
            int nl = text.IndexOf("\r\n", StringComparison.Ordinal);
            if (nl >= 0)
            {
                _pending.Remove(0, nl + 2);
                return text[..nl];
            }
            int n = _socket.Receive(_buffer);
            if (n == 0) return null;
            _pending.Append(Encoding.UTF8.GetString(_buffer, 0, n));
        }
    }

    /// <summary>Waits for an event line.</summary>
    public string NextEvent()
    {
        if (Events.Count > 0)
        {
            var e = Events[0];
            Events.RemoveAt(0);
            return e;
        }
        string line = ReadLine() ?? throw new EndOfStreamException();
        Transcript.Add(line);
        return line;
    }

    /// <summary>An event with its timestamp blanked, for comparisons.</summary>
    public static string WithoutTimestamp(string line) =>
        Regex.Replace(line, "\"timestamp\": \\{\"seconds\": \\d+, \"microseconds\": \\d+\\}", "\"timestamp\": T");

    public void Dispose() => _socket.Dispose();
}
