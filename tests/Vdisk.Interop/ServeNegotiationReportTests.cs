using System.Buffers.Binary;
using System.Net.Sockets;
using Vdisk.Interop.Support;
using Vdisk.Server.Nbd;
using Xunit;

namespace Vdisk.Interop;

/// <summary>
/// A client that fails the NBD handshake is reported on stderr as qemu-storage-daemon 7.2
/// reports it ("option negotiation failed: Failed to read flags: Unexpected end-of-file before
/// all data were read", "Bad magic received", ...): the same clients against both daemons, the
/// same lines in the same order. A client that ends politely (NBD_OPT_ABORT) prints nothing.
/// </summary>
public class ServeNegotiationReportTests : IDisposable
{
    private const ulong OptionMagic = 0x49484156454F5054;
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    /// <summary>A client's behaviour, and whether QEMU reports it.</summary>
    private sealed record Scenario(string Name, Action<Socket> Act, bool Reported = true);

    private static readonly Scenario[] Scenarios =
    [
        new("leaves after the greeting", s => Read(s, NbdGreeting.Length)),
        new("resets with the greeting half read", s => Read(s, 8)),
        new("sends unknown client flags", s => { Read(s, NbdGreeting.Length); s.Send(U32(0xffff_ffff)); ReadToEnd(s); }),
        new("leaves after its flags", s => { Read(s, NbdGreeting.Length); s.Send(U32(3)); }),
        new("leaves inside the option magic", s => { Read(s, NbdGreeting.Length); s.Send([.. U32(3), .. "IHAV"u8]); }),
        new("sends a bad option magic", s => { Read(s, NbdGreeting.Length); s.Send([.. U32(3), .. U64(0x1234), .. U32(1), .. U32(0)]); ReadToEnd(s); }),
        new("leaves inside the option number", s => { Read(s, NbdGreeting.Length); s.Send([.. U32(3), .. U64(OptionMagic), 0, 0]); }),
        new("leaves inside the option length", s => { Read(s, NbdGreeting.Length); s.Send([.. U32(3), .. U64(OptionMagic), .. U32(7), 0]); }),
        new("leaves inside the option data", s => { Read(s, NbdGreeting.Length); s.Send([.. U32(3), .. U64(OptionMagic), .. U32(7), .. U32(10), .. "abc"u8]); }),
        new("aborts", s => { Read(s, NbdGreeting.Length); s.Send([.. U32(3), .. U64(OptionMagic), .. U32(2), .. U32(0)]); ReadToEnd(s); }, Reported: false),
        new("asks for an export that does not exist", s => { Read(s, NbdGreeting.Length); s.Send([.. U32(3), .. U64(OptionMagic), .. U32(1), .. U32(6), .. "nosuch"u8]); ReadToEnd(s); }),
        new("announces an option over 32 MiB", s => { Read(s, NbdGreeting.Length); s.Send([.. U32(3), .. U64(OptionMagic), .. U32(7), .. U32(100_000_000)]); ReadToEnd(s); }),
    ];

    [Fact]
    public void FailedHandshakes_AreReportedAsQemuStorageDaemonReportsThem()
    {
        string qsd = Run(Daemon.Qsd, "q");
        string vdisk = Run(Daemon.Vdisk, "v");
        Assert.Equal(Scenarios.Count(s => s.Reported), qsd.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);
        Assert.Equal(qsd.Replace("qemu-storage-daemon:", "vdisk:", StringComparison.Ordinal), vdisk);
    }

    /// <summary>Runs every scenario against one daemon; returns what it printed on stderr.</summary>
    private string Run(Func<IEnumerable<string>, string[], Daemon> start, string tag)
    {
        var image = _dir.File($"{tag}.raw");
        File.WriteAllBytes(image, new byte[1 << 20]);
        string nbd = _dir.File($"{tag}-n.sock"), qmp = _dir.File($"{tag}-m.sock");
        // Ready when the monitor listens (after the NBD server, which comes first on the command
        // line): a readiness probe on the NBD socket would itself be a failed handshake.
        using var daemon = start([.. Serve.Blockdevs(image, "raw"), .. Serve.NbdServer(nbd), .. Serve.Export(), .. Serve.Monitor(qmp)], [qmp]);
        int reported = 0;
        foreach (var scenario in Scenarios)
        {
            using (var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
            {
                s.Connect(new UnixDomainSocketEndPoint(nbd));
                scenario.Act(s);
            }
            if (!scenario.Reported) continue;
            reported++;
            // The report is written once the daemon has seen the client go: wait for it, so that
            // the next scenario's line cannot come first.
            Poll.Until(() => Lines(daemon.Stderr) >= reported,
                () => $"{tag}: no report after '{scenario.Name}'; stderr so far:\n{daemon.Stderr}", TimeSpan.FromSeconds(20), TimeSpan.FromMilliseconds(5));
        }
        Assert.Equal(0, daemon.Signal());
        return daemon.Stderr;
    }

    private static int Lines(string text) => text.Count(c => c == '\n');

    private static byte[] U32(uint v)
    {
        var b = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(b, v);
        return b;
    }

    private static byte[] U64(ulong v)
    {
        var b = new byte[8];
        BinaryPrimitives.WriteUInt64BigEndian(b, v);
        return b;
    }

    private static void Read(Socket s, int count)
    {
        var buffer = new byte[count];
        for (int done = 0; done < count;)
        {
            int n = s.Receive(buffer, done, count - done, SocketFlags.None);
            if (n == 0) throw new EndOfStreamException($"the daemon closed after {done} of {count} bytes");
            done += n;
        }
    }

    /// <summary>Reads until the daemon closes (or resets) the connection.</summary>
    private static void ReadToEnd(Socket s)
    {
        var buffer = new byte[4096];
        try
        {
            while (s.Receive(buffer) > 0) { }
        }
        catch (SocketException) { }
    }
}
