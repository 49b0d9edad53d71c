using System.Buffers.Binary;
using Vdisk.Interop.Support;
using Vdisk.Server.Nbd;
using Xunit;

namespace Vdisk.Interop;

/// <summary>
/// Malformed and hostile traffic: NBD clients that break the protocol, vanish, or push limits,
/// and QMP clients that send nonsense. Each gets an error reply or a clean disconnect; the
/// daemon stays up, other clients are unaffected, and no data is lost.
/// </summary>
public class ServeRobustnessTests : IDisposable
{
    private readonly TempDir _dir = new();
    private readonly string _image;
    private readonly string _nbd;
    private readonly string _qmp;
    private readonly Daemon _daemon;

    public ServeRobustnessTests()
    {
        _image = Serve.PatternedRaw(_dir, size: 64 << 20);
        _nbd = _dir.File("n.sock");
        _qmp = _dir.File("m.sock");
        _daemon = Daemon.Vdisk(
        [
            .. Serve.Blockdevs(_image, "raw"), .. Serve.NbdServer(_nbd), .. Serve.Export(writable: true),
            "--export", "type=nbd,id=ro,node-name=disk,name=ro,writable=off,share-rw=on", .. Serve.Monitor(_qmp),
        ], _nbd, _qmp);
    }

    public void Dispose()
    {
        _daemon.Dispose();
        _dir.Dispose();
    }

    /// <summary>The daemon is alive and a well-behaved client still gets correct data.</summary>
    private void AssertStillServing()
    {
        Assert.False(_daemon.HasExited);
        using var c = new NbdClient(_nbd);
        c.Open("disk");
        Assert.All(c.Read(0, 65536), b => Assert.Equal(0xab, b));
        Assert.All(c.Read(1 << 20, 65536), b => Assert.Equal(0xcd, b));
    }

    private NbdClient Negotiating()
    {
        var c = new NbdClient(_nbd);
        c.Handshake();
        return c;
    }

    [Fact]
    public void BadOptionMagic_Disconnects()
    {
        using var c = Negotiating();
        c.Send(new byte[16]);
        Assert.True(c.IsClosedByServer());
        AssertStillServing();
    }

    [Fact]
    public void UnknownClientFlags_Disconnect()
    {
        using var c = new NbdClient(_nbd);
        c.Handshake(clientFlags: 0x80);
        Assert.True(c.IsClosedByServer());
        AssertStillServing();
    }

    [Fact]
    public void OversizedOption_IsRefusedAndTheSessionGoesOn()
    {
        using var c = Negotiating();
        var big = new byte[1 << 20];
        c.SendOption((uint)NbdOption.List, big);
        var reply = c.ReadOptionReply();
        Assert.Equal(NbdOptionReplyType.ErrTooBig, reply.Type);
        Assert.Equal(NbdOptionReplyType.Ack, c.Option((uint)NbdOption.StructuredReply, [])[^1].Type);
        AssertStillServing();
    }

    [Fact]
    public void AbsurdOptionLength_Disconnects()
    {
        using var c = Negotiating();
        c.SendOption((uint)NbdOption.Go, [], lengthOverride: 0xffffffff);
        Assert.True(c.IsClosedByServer());
        AssertStillServing();
    }

    [Fact]
    public void UnknownAndMalformedOptions_GetErrorReplies()
    {
        using var c = Negotiating();
        var unknown = c.Option(99, "abc"u8);
        Assert.Equal((NbdOptionReplyType.ErrUnsupported, "Unsupported option 99 (<unknown>)"), (unknown[0].Type, unknown[0].Text));
        var noExport = c.Option((uint)NbdOption.Info, new NbdInfoRequest("nosuch", []).ToBytes());
        Assert.Equal((NbdOptionReplyType.ErrUnknown, "export 'nosuch' not present"), (noExport[0].Type, noExport[0].Text));
        Assert.Equal(NbdOptionReplyType.ErrInvalid, c.Option((uint)NbdOption.Go, [0, 0])[0].Type);
        Assert.Equal(NbdOptionReplyType.ErrInvalid, c.Option((uint)NbdOption.SetMetaContext, new NbdMetaContextRequest("disk", ["base:allocation"]).ToBytes())[0].Type);
        Assert.Equal(NbdOptionReplyType.ErrPolicy, c.Option((uint)NbdOption.StartTls, [])[0].Type);
        Assert.Equal(NbdOptionReplyType.Ack, c.Option((uint)NbdOption.Abort, [])[0].Type);
        Assert.True(c.IsClosedByServer());
        AssertStillServing();
    }

    [Fact]
    public void ExportNameOption_ForAnUnknownExport_Disconnects_ForAKnownOneServes()
    {
        using (var c = Negotiating())
        {
            c.SendOption((uint)NbdOption.ExportName, "nosuch"u8);
            Assert.True(c.IsClosedByServer());
        }
        using (var c = new NbdClient(_nbd))
        {
            c.Handshake(clientFlags: 1);
            c.SendOption((uint)NbdOption.ExportName, "disk"u8);
            var reply = c.ReadExactly(10 + 124);
            Assert.Equal((ulong)(64 << 20), BinaryPrimitives.ReadUInt64BigEndian(reply));
            // qemu-nbd's flags for a writable export, without DF since structured replies are off.
            Assert.Equal(0x0d6d, BinaryPrimitives.ReadUInt16BigEndian(reply.AsSpan(8)));
            // No structured replies were negotiated: a READ gets a simple reply followed by data.
            c.SendRequest(NbdCommand.Read, 9, 0, 4096);
            var r = c.ReadReply(4096);
            Assert.Equal((false, NbdError.None, 9ul), (r.Structured, r.Error, r.Cookie));
            Assert.All(r.Payload, b => Assert.Equal(0xab, b));
        }
    }

    [Fact]
    public void BadRequests_GetErrorsAndTheConnectionGoesOn()
    {
        using var c = new NbdClient(_nbd);
        ulong size = c.Open("disk");
        (NbdError, string) Ask(NbdCommand command, ulong offset, uint length, NbdCommandFlags flags = 0, byte[]? payload = null)
        {
            c.SendRequest(command, 5, offset, length, flags, payload);
            var r = c.ReadReply();
            return (r.ErrorNumber, r.ErrorMessage);
        }
        Assert.Equal((NbdError.Invalid, "invalid request type (42) received"), Ask((NbdCommand)42, 0, 0));
        Assert.Equal((NbdError.Invalid, $"operation past EOF; From: {size - 512}, Len: 4096, Size: {size}"), Ask(NbdCommand.Read, size - 512, 4096));
        Assert.Equal(NbdError.NoSpace, Ask(NbdCommand.Write, size - 512, 1024, payload: new byte[1024]).Item1);
        Assert.Equal(NbdError.NoSpace, Ask(NbdCommand.WriteZeroes, size, 1).Item1);
        Assert.Equal(NbdError.Invalid, Ask(NbdCommand.Trim, ulong.MaxValue, 1).Item1);
        Assert.Equal((NbdError.Invalid, "unsupported flags for command read (got 0x80)"), Ask(NbdCommand.Read, 0, 512, (NbdCommandFlags)0x80));
        Assert.Equal((NbdError.Invalid, "len (33554433 ) is larger than max len (33554432)"), Ask(NbdCommand.Read, 0, 32 * 1024 * 1024 + 1));
        Assert.Equal((NbdError.Invalid, "need non-zero length"), Ask(NbdCommand.BlockStatus, 0, 0));
        Assert.All(c.Read(0, 65536), b => Assert.Equal(0xab, b));
        AssertStillServing();
    }

    /// <summary>The bad requests above and the writes to the read-only export below, as (export, command, offset, length, flags, payload).</summary>
    private static readonly (string Export, NbdCommand Command, ulong Offset, uint Length, NbdCommandFlags Flags, byte[]? Payload)[] s_badRequests =
    [
        ("disk", (NbdCommand)42, 0, 0, 0, null),
        ("disk", NbdCommand.Read, (64 << 20) - 512, 4096, 0, null),
        ("disk", NbdCommand.Write, (64 << 20) - 512, 1024, 0, new byte[1024]),
        ("disk", NbdCommand.WriteZeroes, 64 << 20, 1, 0, null),
        ("disk", NbdCommand.Trim, ulong.MaxValue, 1, 0, null),
        ("disk", NbdCommand.Read, 0, 512, (NbdCommandFlags)0x80, null),
        ("disk", NbdCommand.Read, 0, 32 * 1024 * 1024 + 1, 0, null),
        ("disk", NbdCommand.BlockStatus, 0, 0, 0, null),
        ("ro", NbdCommand.Write, 0, 512, 0, new byte[512]),
        ("ro", NbdCommand.Trim, 0, 512, 0, null),
        ("ro", NbdCommand.WriteZeroes, 0, 512, 0, null),
    ];

    /// <summary>
    /// Error numbers where vdisk follows the NBD protocol and QEMU 7.2 sends EINVAL for every
    /// refused request (docs/serve.md): EPERM for writes to a read-only export, ENOSPC for writes past the end.
    /// </summary>
    private static NbdError ProtocolNumber(string export, NbdCommand command, NbdError qemu) => (export, command) switch
    {
        ("ro", _) => NbdError.Perm,
        (_, NbdCommand.Write or NbdCommand.WriteZeroes) => NbdError.NoSpace,
        _ => qemu,
    };

    private static List<string> Answers(string socket, bool protocolNumbers = false)
    {
        using var disk = new NbdClient(socket);
        disk.Open("disk");
        using var ro = new NbdClient(socket);
        ro.Open("ro");
        return s_badRequests.Select(q =>
        {
            var c = q.Export == "ro" ? ro : disk;
            c.SendRequest(q.Command, 5, q.Offset, q.Length, q.Flags, q.Payload);
            var r = c.ReadReply();
            var number = protocolNumbers ? ProtocolNumber(q.Export, q.Command, r.ErrorNumber) : r.ErrorNumber;
            return $"{q.Export}: {q.Command} {q.Offset} {q.Length}: {number} \"{r.ErrorMessage}\"";
        }).ToList();
    }

    /// <summary>
    /// qemu-storage-daemon, asked the same bad requests, gives the same message text, QEMU 7.2's
    /// "len (N ) is larger than max len (M)" included, and the same error numbers apart from
    /// the documented protocol ones.
    /// </summary>
    [Fact]
    public void BadRequests_GetTheErrorsAndMessagesOfQsd()
    {
        using var dir = new TempDir();
        string image = Serve.PatternedRaw(dir, size: 64 << 20), nbd = dir.File("q.sock"), qmp = dir.File("qm.sock");
        List<string> qsd;
        using (Daemon.Qsd([.. Serve.Blockdevs(image, "raw"), .. Serve.NbdServer(nbd), .. Serve.Export(writable: true),
            .. Serve.Export(name: "ro", id: "ro"), .. Serve.Monitor(qmp)], nbd, qmp))
            qsd = Answers(nbd, protocolNumbers: true);
        Assert.Equal(string.Join("\n", qsd), string.Join("\n", Answers(_nbd)));
        Assert.Contains($"disk: Read 0 33554433: Invalid \"len (33554433 ) is larger than max len (33554432)\"", qsd);
        AssertStillServing();
    }

    [Fact]
    public void WritesToAReadOnlyExport_AreRefusedWithEperm()
    {
        using var c = new NbdClient(_nbd);
        c.Open("ro");
        foreach (var (command, payload) in new (NbdCommand, byte[]?)[] { (NbdCommand.Write, new byte[512]), (NbdCommand.Trim, null), (NbdCommand.WriteZeroes, null) })
        {
            c.SendRequest(command, 1, 0, 512, payload: payload);
            var r = c.ReadReply();
            Assert.Equal((NbdError.Perm, "Export is read-only"), (r.ErrorNumber, r.ErrorMessage));
        }
        Assert.All(c.Read(0, 512), b => Assert.Equal(0xab, b));
    }

    [Fact]
    public void BadRequestMagic_Disconnects()
    {
        using var c = new NbdClient(_nbd);
        c.Open("disk");
        c.Send(new byte[NbdRequest.HeaderLength]);
        Assert.True(c.IsClosedByServer());
        AssertStillServing();
    }

    [Fact]
    public void OversizedWrite_IsAnsweredThenDisconnected_WithoutWriting()
    {
        using var c = new NbdClient(_nbd);
        c.Open("disk");
        c.SendRequest(NbdCommand.Write, 3, 0, 64 * 1024 * 1024);
        var r = c.ReadReply();
        Assert.Equal(NbdError.Invalid, r.ErrorNumber);
        Assert.True(c.IsClosedByServer());
        AssertStillServing();
    }

    [Fact]
    public void ClientVanishingMidWrite_LeavesTheImageAsItWas()
    {
        using (var c = new NbdClient(_nbd))
        {
            c.Open("disk");
            c.SendRequest(NbdCommand.Write, 1, 0, 1 << 20);
            c.Send(Enumerable.Repeat((byte)0x99, 300 * 1024).ToArray());
        }
        using (var c = new NbdClient(_nbd))
        {
            c.Open("disk");
            // Many requests in flight, then gone without reading a reply.
            for (ulong i = 0; i < 64; i++) c.SendRequest(NbdCommand.Read, i, 0, 1 << 20);
        }
        AssertStillServing();
    }

    [Fact]
    public async Task PipelinedRequests_AreAllAnswered_WithTheirCookies()
    {
        using var c = new NbdClient(_nbd);
        c.Open("disk");
        var expected = Enumerable.Range(0, 200).Select(i => 1000 + (ulong)i).Append(5000ul).ToHashSet();
        // Send while the replies are read, as real clients do: a client that only writes would
        // stall once the server's in-flight limit and both socket buffers are full.
        var sending = Task.Run(() =>
        {
            for (ulong i = 0; i < 200; i++)
            {
                if (i % 2 == 0) c.SendRequest(NbdCommand.Write, 1000 + i, (2 << 20) + i * 4096, 4096, payload: Enumerable.Repeat((byte)i, 4096).ToArray());
                else c.SendRequest(NbdCommand.Read, 1000 + i, (1 << 20) + (i % 16) * 4096, 4096);
            }
            c.SendRequest(NbdCommand.Flush, 5000, 0, 0);
        });
        while (expected.Count > 0)
        {
            var r = c.ReadReply();
            Assert.Equal(NbdError.None, r.ErrorNumber);
            if (r.Done) Assert.True(expected.Remove(r.Cookie), $"unexpected cookie {r.Cookie}");
        }
        await sending;
        for (ulong i = 0; i < 200; i += 2)
            Assert.All(c.Read((2 << 20) + i * 4096, 4096), b => Assert.Equal((byte)i, b));
    }

    [Fact]
    public void ManyLargeRequestsInFlight_AreAllAnswered()
    {
        using var c = new NbdClient(_nbd);
        c.Open("disk");
        const uint Max = 32 * 1024 * 1024;
        // 2 GiB asked for at once: the connection takes them a few at a time.
        for (ulong i = 0; i < 32; i++) c.SendRequest(NbdCommand.Read, i, i % 2 * Max, Max, NbdCommandFlags.DontFragment);
        var pending = Enumerable.Range(0, 32).Select(i => (ulong)i).ToHashSet();
        while (pending.Count > 0)
        {
            var r = c.ReadReply();
            Assert.Equal(NbdError.None, r.ErrorNumber);
            Assert.Equal(NbdChunkType.OffsetData, r.Type);
            Assert.Equal(8 + (int)Max, r.Payload.Length);
            if (r.Cookie % 2 == 0) Assert.Equal(0xab, r.Payload[8]);
            if (r.Done) Assert.True(pending.Remove(r.Cookie));
        }
        AssertStillServing();
    }

    [Fact]
    public void SeveralConnections_WriteAndReadAtOnce()
    {
        Parallel.For(0, 6, k =>
        {
            using var c = new NbdClient(_nbd);
            c.Open("disk");
            ulong offset = (2 << 20) + (ulong)k * 65536;
            c.SendRequest(NbdCommand.Write, 1, offset, 65536, NbdCommandFlags.Fua, Enumerable.Repeat((byte)(k + 1), 65536).ToArray());
            Assert.Equal(NbdError.None, c.ReadReply().ErrorNumber);
            Assert.All(c.Read(offset, 65536), b => Assert.Equal((byte)(k + 1), b));
            Assert.All(c.Read(0, 65536), b => Assert.Equal(0xab, b));
        });
        AssertStillServing();
    }

    [Fact]
    public void MalformedQmp_GetsErrors_OtherClientsAreUnaffected()
    {
        using var other = QmpClient.Connect(_qmp);
        using var c = QmpClient.Connect(_qmp);
        Assert.Equal("{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error, invalid keyword 'nonsense'\"}}", c.Execute("nonsense"));
        Assert.Equal("{\"error\": {\"class\": \"GenericError\", \"desc\": \"QMP input must be a JSON object\"}}", c.Execute("[1, 2]"));
        Assert.Equal("{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error, expecting value\"}}", c.Execute("{\"execute\": }"));
        Assert.Equal("{\"error\": {\"class\": \"GenericError\", \"desc\": \"QMP input member 'execute' must be a string\"}}", c.Execute("{\"execute\": 5}"));
        // An unfinished command is dropped by 0xFF, as QEMU's parser does.
        c.Send("{\"execute\": \"qu");
        c.SendBytes([0xFF]);
        Assert.Equal("{\"return\": [{\"node-name\": \"disk\", \"shutting-down\": false, \"type\": \"nbd\", \"id\": \"ro\"}, {\"node-name\": \"disk\", \"shutting-down\": false, \"type\": \"nbd\", \"id\": \"e0\"}]}",
            c.Execute("{\"execute\": \"query-block-exports\"}"));
        Assert.StartsWith("{\"return\": {\"qemu\"", other.Execute("{\"execute\": \"query-version\"}"));
        AssertStillServing();
    }

    [Fact]
    public async Task OversizedQmpInput_IsAnsweredThenDisconnected()
    {
        using var c = QmpClient.Connect(_qmp);
        // The server hangs up half way through, so the rest of the send may fail.
        var sending = Task.Run(() =>
        {
            try
            {
                c.Send("{\"execute\": \"" + new string('x', 2 << 20) + "\"}");
            }
            catch (System.Net.Sockets.SocketException) { }
        });
        Assert.Equal("{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON token size limit exceeded\"}}", c.NextReply());
        Assert.Null(c.ReadLine());
        await sending;
        using var again = QmpClient.Connect(_qmp);
        Assert.StartsWith("{\"return\": {\"qemu\"", again.Execute("{\"execute\": \"query-version\"}"));
    }

    [Fact]
    public void QmpClientVanishingMidCommand_DoesNotHurt()
    {
        using (var c = QmpClient.Connect(_qmp)) c.Send("{\"execute\": \"blockdev-add\", \"arguments\": {\"driver\": ");
        using var again = QmpClient.Connect(_qmp);
        Assert.StartsWith("{\"return\": [", again.Execute("{\"execute\": \"query-block-exports\"}"));
        AssertStillServing();
    }
}
