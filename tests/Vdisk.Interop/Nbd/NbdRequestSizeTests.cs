using System.Globalization;
using System.Text.RegularExpressions;
using Vdisk.Interop.Support;
using Xunit;

namespace Vdisk.Interop.Nbd;

/// <summary>
/// The requests vdisk's NBD client sends, as qemu-nbd's own trace records them: a read or write
/// longer than 256 KiB goes out as several requests of at most 256 KiB (nbdcopy's size), because
/// qemu-nbd maps a fresh buffer for every large request and pays for it page by page.
/// </summary>
public sealed partial class NbdRequestSizeTests
{
    private const int Piece = 256 * 1024;
    private const int NbdCmdRead = 0;
    private const int NbdCmdWrite = 1;

    [GeneratedRegex(@"^nbd_co_send_structured_read ", RegexOptions.Multiline)]
    private static partial Regex ReadReplyLine();

    [GeneratedRegex(@"^nbd_receive_request Got request: \{ magic = 0x[0-9a-f]+, \.flags = 0x[0-9a-f]+, \.type = 0x(?<type>[0-9a-f]+), from = (?<from>\d+), len = (?<len>\d+) \}", RegexOptions.Multiline)]
    private static partial Regex RequestLine();

    private sealed record Request(int Type, long From, long Length);

    /// <summary>qemu-nbd serving <paramref name="image"/> with its request trace on stderr.</summary>
    private static Daemon TracedQemuNbd(TempDir dir, string image, bool writable)
    {
        string socket = dir.File("nbd.sock");
        return Daemon.Start("qemu-nbd", ["-t", "-f", "raw", "-x", "disk", "-k", socket, "--trace", "nbd_receive_request", "--trace", "nbd_co_send_structured_read", .. writable ? Array.Empty<string>() : ["-r"], image], socket);
    }

    /// <summary>Ends the server and returns the requests it received of <paramref name="type"/>, in order.</summary>
    private static List<Request> Requests(Daemon server, int type)
    {
        server.Signal();
        var all = RequestLine().Matches(server.Stderr)
            .Select(m => new Request(int.Parse(m.Groups["type"].Value, NumberStyles.HexNumber, CultureInfo.InvariantCulture),
                long.Parse(m.Groups["from"].Value, CultureInfo.InvariantCulture), long.Parse(m.Groups["len"].Value, CultureInfo.InvariantCulture)))
            .ToList();
        Assert.NotEmpty(all);
        return all.Where(r => r.Type == type).ToList();
    }

    /// <summary>The requests cover [0, <paramref name="length"/>) exactly once, none longer than a piece.</summary>
    private static void AssertPieces(List<Request> requests, long length)
    {
        Assert.All(requests, r => Assert.InRange(r.Length, 1, Piece));
        long covered = 0;
        foreach (var r in requests.OrderBy(r => r.From))
        {
            Assert.Equal(covered, r.From);
            covered += r.Length;
        }
        Assert.Equal(length, covered);
    }

    /// <summary>
    /// vdisk convert from a qemu-nbd export into a local qcow2 (<paramref name="toServer"/> false)
    /// or from a local raw image into a writable export: the requests of the direction that
    /// crosses the wire are pieces, and every byte arrives.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Convert_MovesDataIn256KiBPieces_AndCopiesEveryByte(bool toServer)
    {
        using var dir = new TempDir();
        var source = dir.RawImage("source.raw", 6 << 20);
        Serve.Check(Programs.Run("qemu-io", "-f", "raw", source, "-c", "write -P 0x3c 0 6M"));
        string local = toServer ? source : dir.File("copy.qcow2");
        string exported = toServer ? dir.RawImage("target.raw", 6 << 20) : source;
        string uri = $"nbd+unix:///disk?socket={dir.File("nbd.sock")}";
        using var server = TracedQemuNbd(dir, exported, writable: toServer);

        var result = toServer
            ? Programs.Run(Programs.Vdisk, "convert", "-n", "-f", "raw", "-O", "raw", source, uri)
            : Programs.Run(Programs.Vdisk, "convert", "-f", "raw", "-O", "qcow2", uri, local);

        Assert.True(result.ExitCode == 0, result.ToString());
        AssertPieces(Requests(server, toServer ? NbdCmdWrite : NbdCmdRead), 6 << 20);
        string copy = toServer ? exported : local;
        Assert.Equal("Images are identical.\n", Programs.Run("qemu-img", "compare", "-f", "raw", "-F", toServer ? "raw" : "qcow2", source, copy).Stdout);
    }

    [Fact]
    public void OneLongRead_IsSplitIntoPiecesInFlightTogether_AndReadsThePattern()
    {
        using var dir = new TempDir();
        var source = dir.RawImage("source.raw", 4 << 20);
        Serve.Check(Programs.Run("qemu-io", "-f", "raw", source, "-c", "write -P 0x5e 1M 2M"));
        using var server = TracedQemuNbd(dir, source, writable: false);
        const int Reads = 5;

        var result = Programs.Run(Programs.Vdisk, ["io", "-r", "-f", "raw", .. Enumerable.Repeat(new[] { "-c", "read -P 0x5e 1M 2M" }, Reads).SelectMany(c => c),
            $"nbd+unix:///disk?socket={dir.File("nbd.sock")}"]);

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Equal(Reads, Regex.Matches(result.Stdout, "^read 2097152/2097152 bytes at offset 1048576$", RegexOptions.Multiline).Count);
        var reads = Requests(server, NbdCmdRead);
        Assert.Equal(8 * Reads, reads.Count);
        Assert.All(reads, r => Assert.Equal(Piece, r.Length));
        for (int i = 0; i < Reads; i++)
            Assert.Equal(Enumerable.Range(0, 8).Select(k => (1L << 20) + (long)k * Piece), reads.Skip(8 * i).Take(8).Select(r => r.From).Order());
        // In flight together: at some point the server held more than one read it had not
        // answered (one after the other, every reply would come before the next request; which
        // requests are still unanswered when a reply goes out depends on timing, hence five reads).
        int outstanding = 0, most = 0;
        foreach (var line in server.Stderr.Split('\n'))
        {
            if (RequestLine().Match(line) is { Success: true } m && m.Groups["type"].Value == "0") most = Math.Max(most, ++outstanding);
            else if (ReadReplyLine().IsMatch(line)) outstanding--;
        }
        Assert.InRange(most, 2, 8);
    }
}
