using System.Buffers.Binary;
using System.Net.Sockets;
using System.Text;
using Vdisk.Server.Nbd;

namespace Vdisk.Interop.Support;

/// <summary>
/// A raw NBD client that can send anything, well-formed or not, built on the server's own
/// message types. Replies are returned as parsed records.
/// </summary>
public sealed class NbdClient : IDisposable
{
    private readonly Socket _socket;

    public NbdClient(string path)
    {
        _socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        _socket.Connect(new UnixDomainSocketEndPoint(path));
        // A test that stops making progress fails instead of hanging.
        _socket.ReceiveTimeout = 30_000;
        _socket.SendTimeout = 30_000;
    }

    public sealed record OptionReply(uint Option, NbdOptionReplyType Type, byte[] Data)
    {
        public string Text => Encoding.UTF8.GetString(Data);
    }

    public sealed record Reply(bool Structured, NbdError Error, ulong Cookie, ushort Flags, NbdChunkType Type, byte[] Payload)
    {
        public bool Done => !Structured || (Flags & 1) != 0;

        /// <summary>The error number of an ERROR chunk, or the simple reply's error.</summary>
        public NbdError ErrorNumber => Structured && Type == NbdChunkType.Error ? (NbdError)BinaryPrimitives.ReadUInt32BigEndian(Payload) : Error;

        public string ErrorMessage => Structured && Type == NbdChunkType.Error ? Encoding.UTF8.GetString(Payload, 6, BinaryPrimitives.ReadUInt16BigEndian(Payload.AsSpan(4))) : "";
    }

    public byte[] ReadExactly(int count)
    {
        var buffer = new byte[count];
        int done = 0;
        while (done < count)
        {
            int n = _socket.Receive(buffer, done, count - done, SocketFlags.None);
            if (n == 0) throw new EndOfStreamException($"server closed after {done} of {count} bytes");
            done += n;
        }
        return buffer;
    }

    /// <summary>True when the server closed the connection (reads end of stream).</summary>
    public bool IsClosedByServer()
    {
        try
        {
            return _socket.Receive(new byte[1]) == 0;
        }
        catch (SocketException)
        {
            return true;
        }
    }

    public void Send(ReadOnlySpan<byte> data) => _socket.Send(data);

    /// <summary>Reads the greeting and answers with client flags.</summary>
    public void Handshake(uint clientFlags = 3)
    {
        var greeting = ReadExactly(NbdGreeting.Length);
        if (BinaryPrimitives.ReadUInt64BigEndian(greeting) != NbdMagic.Init) throw new InvalidDataException("not NBD");
        var flags = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(flags, clientFlags);
        Send(flags);
    }

    /// <summary>
    /// Sends an option's header and data in one write. Two writes raced the server: on a header
    /// it acts on alone (ABORT, a length it refuses) it answers and hangs up, and the second
    /// write, even of no bytes, then failed with EPIPE (seen under load in CI).
    /// </summary>
    public void SendOption(uint option, ReadOnlySpan<byte> data, uint? lengthOverride = null)
    {
        var request = new byte[NbdOptionRequest.HeaderLength + data.Length];
        new NbdOptionRequest((NbdOption)option, lengthOverride ?? (uint)data.Length).Write(request);
        data.CopyTo(request.AsSpan(NbdOptionRequest.HeaderLength));
        Send(request);
    }

    public OptionReply ReadOptionReply()
    {
        var header = ReadExactly(NbdOptionReply.HeaderLength);
        if (BinaryPrimitives.ReadUInt64BigEndian(header) != NbdMagic.OptionReply) throw new InvalidDataException("bad option reply magic");
        uint length = BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(16));
        return new OptionReply(BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(8)), (NbdOptionReplyType)BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(12)), ReadExactly((int)length));
    }

    /// <summary>Sends an option and reads replies up to the final one (ACK or an error).</summary>
    public List<OptionReply> Option(uint option, ReadOnlySpan<byte> data)
    {
        SendOption(option, data);
        var replies = new List<OptionReply>();
        while (true)
        {
            var r = ReadOptionReply();
            replies.Add(r);
            if (r.Type == NbdOptionReplyType.Ack || ((uint)r.Type & 0x80000000) != 0) return replies;
        }
    }

    /// <summary>Handshake, structured replies, base:allocation, GO: ready for requests. Returns the export size.</summary>
    public ulong Open(string export, bool structured = true)
    {
        Handshake();
        if (structured)
        {
            Option((uint)NbdOption.StructuredReply, []);
            Option((uint)NbdOption.SetMetaContext, new NbdMetaContextRequest(export, ["base:allocation"]).ToBytes());
        }
        var replies = Option((uint)NbdOption.Go, new NbdInfoRequest(export, []).ToBytes());
        var last = replies[^1];
        if (last.Type != NbdOptionReplyType.Ack) throw new InvalidOperationException($"GO failed: {last.Type} {last.Text}");
        var info = replies.Single(r => r.Type == NbdOptionReplyType.Info && BinaryPrimitives.ReadUInt16BigEndian(r.Data) == 0);
        Structured = structured;
        return BinaryPrimitives.ReadUInt64BigEndian(info.Data.AsSpan(2));
    }

    public bool Structured { get; private set; }

    public void SendRequest(NbdCommand command, ulong cookie, ulong offset, uint length, NbdCommandFlags flags = 0, byte[]? payload = null)
    {
        var header = new byte[NbdRequest.HeaderLength];
        new NbdRequest(flags, command, cookie, offset, length).Write(header);
        Send(header);
        if (payload is not null) Send(payload);
    }

    /// <summary>Reads one reply message; a simple reply to a READ is followed by <paramref name="simpleReadLength"/> bytes.</summary>
    public Reply ReadReply(int simpleReadLength = 0)
    {
        var magic = ReadExactly(4);
        uint m = BinaryPrimitives.ReadUInt32BigEndian(magic);
        if (m == NbdMagic.SimpleReply)
        {
            var rest = ReadExactly(12);
            var error = (NbdError)BinaryPrimitives.ReadUInt32BigEndian(rest);
            var data = error == NbdError.None && simpleReadLength > 0 ? ReadExactly(simpleReadLength) : [];
            return new Reply(false, error, BinaryPrimitives.ReadUInt64BigEndian(rest.AsSpan(4)), 0, NbdChunkType.None, data);
        }
        if (m != NbdMagic.StructuredReply) throw new InvalidDataException($"bad reply magic {m:x}");
        var h = ReadExactly(16);
        uint length = BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(12));
        return new Reply(true, NbdError.None, BinaryPrimitives.ReadUInt64BigEndian(h.AsSpan(4)), BinaryPrimitives.ReadUInt16BigEndian(h),
            (NbdChunkType)BinaryPrimitives.ReadUInt16BigEndian(h.AsSpan(2)), ReadExactly((int)length));
    }

    /// <summary>Reads the chunks of one reply, up to DONE.</summary>
    public List<Reply> ReadWholeReply(int simpleReadLength = 0)
    {
        var chunks = new List<Reply>();
        while (true)
        {
            var r = ReadReply(simpleReadLength);
            chunks.Add(r);
            if (r.Done) return chunks;
        }
    }

    /// <summary>READ through structured chunks into a buffer; throws on an error chunk.</summary>
    public byte[] Read(ulong offset, uint length, ulong cookie = 1)
    {
        SendRequest(NbdCommand.Read, cookie, offset, length);
        var data = new byte[length];
        foreach (var chunk in ReadWholeReply((int)length))
        {
            if (!chunk.Structured)
            {
                if (chunk.Error != NbdError.None) throw new IOException($"read failed: {chunk.Error}");
                return chunk.Payload;
            }
            if (chunk.Type == NbdChunkType.Error) throw new IOException($"read failed: {chunk.ErrorNumber} {chunk.ErrorMessage}");
            if (chunk.Type == NbdChunkType.OffsetData)
            {
                ulong at = BinaryPrimitives.ReadUInt64BigEndian(chunk.Payload);
                chunk.Payload.AsSpan(8).CopyTo(data.AsSpan((int)(at - offset)));
            }
        }
        return data;
    }

    public void Dispose() => _socket.Dispose();
}
