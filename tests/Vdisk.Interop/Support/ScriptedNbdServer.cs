using System.Buffers.Binary;
using System.Net.Sockets;
using System.Text;
using Vdisk.Server.Nbd;

namespace Vdisk.Interop.Support;

/// <summary>How a <see cref="ScriptedNbdServer"/> misbehaves.</summary>
public enum NbdMisbehaviour
{
    /// <summary>Refuses NBD_OPT_STRUCTURED_REPLY (ERR_UNSUP) and answers with simple replies, like an old server.</summary>
    NoStructuredReplies,
    /// <summary>Answers a READ with a reply whose magic is wrong.</summary>
    BadReplyMagic,
    /// <summary>Answers a READ with an OFFSET_DATA chunk outside the requested range.</summary>
    ChunkOutsideRequest,
    /// <summary>Closes the connection in the middle of the greeting.</summary>
    ClosesDuringGreeting,
    /// <summary>Greets oldstyle: size and flags at once, no options (so no export names, no list).</summary>
    Oldstyle,
    /// <summary>Newstyle without the fixed bit: only NBD_OPT_EXPORT_NAME is understood.</summary>
    NotFixedNewstyle,
}

/// <summary>
/// A tiny NBD server on a Unix socket that serves a 1 MiB export of 0x5a bytes and breaks the
/// protocol in one chosen way, so that vdisk's client and QEMU's can be given the same bad
/// server and their messages compared. No real server misbehaves on demand.
/// </summary>
public sealed class ScriptedNbdServer : IDisposable
{
    public const long Size = 1 << 20;
    public const byte Fill = 0x5a;

    /// <summary>NBD_CLIENT_MAGIC: an oldstyle server's second magic.</summary>
    private const ulong OldstyleMagic = 0x00420281861253;

    private readonly Socket _listener;
    private readonly NbdMisbehaviour _mode;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _accepting;

    public ScriptedNbdServer(string socketPath, NbdMisbehaviour mode)
    {
        _mode = mode;
        SocketPath = socketPath;
        _listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        _listener.Bind(new UnixDomainSocketEndPoint(socketPath));
        _listener.Listen(8);
        _accepting = Task.Run(AcceptAsync);
    }

    public string SocketPath { get; }

    public string Uri => $"nbd+unix:///disk?socket={SocketPath}";

    private async Task AcceptAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await _listener.AcceptAsync(_stop.Token);
            }
            catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
            {
                return;
            }
            _ = Task.Run(() => ServeAsync(client));
        }
    }

    private async Task ServeAsync(Socket client)
    {
        using (client)
        {
            try
            {
                await ServeConnectionAsync(client);
            }
            catch (Exception e) when (e is SocketException or EndOfStreamException or ObjectDisposedException or OperationCanceledException)
            {
                // The client went away.
            }
        }
    }

    private async Task ServeConnectionAsync(Socket s)
    {
        if (_mode == NbdMisbehaviour.Oldstyle)
        {
            var old = new byte[8 + 8 + 8 + 4 + 124];
            BinaryPrimitives.WriteUInt64BigEndian(old, NbdMagic.Init);
            BinaryPrimitives.WriteUInt64BigEndian(old.AsSpan(8), OldstyleMagic);
            BinaryPrimitives.WriteUInt64BigEndian(old.AsSpan(16), Size);
            BinaryPrimitives.WriteUInt32BigEndian(old.AsSpan(24), (uint)(NbdTransmissionFlags.HasFlags | NbdTransmissionFlags.SendFlush));
            await s.SendAsync(old);
            await TransmitAsync(s, structured: false);
            return;
        }
        var greeting = new byte[18];
        BinaryPrimitives.WriteUInt64BigEndian(greeting, NbdMagic.Init);
        BinaryPrimitives.WriteUInt64BigEndian(greeting.AsSpan(8), NbdMagic.Option);
        BinaryPrimitives.WriteUInt16BigEndian(greeting.AsSpan(16), _mode == NbdMisbehaviour.NotFixedNewstyle ? (ushort)0 : (ushort)3);
        if (_mode == NbdMisbehaviour.ClosesDuringGreeting)
        {
            await s.SendAsync(greeting.AsMemory(0, 10));
            return;
        }
        await s.SendAsync(greeting);
        await ReadAsync(s, 4);
        bool structured = false;
        while (true)
        {
            var header = await ReadAsync(s, 16);
            uint option = BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(8));
            int length = (int)BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(12));
            await ReadAsync(s, length);
            switch ((NbdOption)option)
            {
                case NbdOption.StructuredReply when _mode != NbdMisbehaviour.NoStructuredReplies:
                    structured = true;
                    await OptionReplyAsync(s, option, NbdOptionReplyType.Ack, []);
                    break;
                case NbdOption.SetMetaContext when structured:
                    var context = new byte[4 + 15];
                    BinaryPrimitives.WriteUInt32BigEndian(context, 1);
                    Encoding.ASCII.GetBytes("base:allocation").CopyTo(context, 4);
                    await OptionReplyAsync(s, option, NbdOptionReplyType.MetaContext, context);
                    await OptionReplyAsync(s, option, NbdOptionReplyType.Ack, []);
                    break;
                case NbdOption.Go:
                    var info = new byte[12];
                    BinaryPrimitives.WriteUInt16BigEndian(info, (ushort)NbdInfoType.Export);
                    BinaryPrimitives.WriteUInt64BigEndian(info.AsSpan(2), Size);
                    BinaryPrimitives.WriteUInt16BigEndian(info.AsSpan(10), (ushort)(NbdTransmissionFlags.HasFlags | NbdTransmissionFlags.SendFlush));
                    await OptionReplyAsync(s, option, NbdOptionReplyType.Info, info);
                    await OptionReplyAsync(s, option, NbdOptionReplyType.Ack, []);
                    await TransmitAsync(s, structured);
                    return;
                case NbdOption.Abort:
                    await OptionReplyAsync(s, option, NbdOptionReplyType.Ack, []);
                    return;
                case NbdOption.ExportName:
                    // No reply header: size, flags and (the client did not ask otherwise) 124 zeroes.
                    var export = new byte[8 + 2 + 124];
                    BinaryPrimitives.WriteUInt64BigEndian(export, Size);
                    BinaryPrimitives.WriteUInt16BigEndian(export.AsSpan(8), (ushort)(NbdTransmissionFlags.HasFlags | NbdTransmissionFlags.SendFlush));
                    await s.SendAsync(export);
                    await TransmitAsync(s, structured: false);
                    return;
                default:
                    await OptionReplyAsync(s, option, NbdOptionReplyType.ErrUnsupported, []);
                    break;
            }
        }
    }

    private async Task TransmitAsync(Socket s, bool structured)
    {
        while (true)
        {
            var request = await ReadAsync(s, 28);
            ushort type = BinaryPrimitives.ReadUInt16BigEndian(request.AsSpan(6));
            ulong cookie = BinaryPrimitives.ReadUInt64BigEndian(request.AsSpan(8));
            ulong offset = BinaryPrimitives.ReadUInt64BigEndian(request.AsSpan(16));
            uint length = BinaryPrimitives.ReadUInt32BigEndian(request.AsSpan(24));
            switch ((NbdCommand)type)
            {
                case NbdCommand.Disconnect:
                    return;
                case NbdCommand.Write:
                    await ReadAsync(s, (int)length);
                    await SimpleReplyAsync(s, cookie, []);
                    break;
                case NbdCommand.Read when _mode == NbdMisbehaviour.BadReplyMagic:
                    var bad = new byte[16];
                    BinaryPrimitives.WriteUInt32BigEndian(bad, 0xdeadbeef);
                    BinaryPrimitives.WriteUInt64BigEndian(bad.AsSpan(8), cookie);
                    await s.SendAsync(bad);
                    break;
                case NbdCommand.Read when structured:
                    ulong at = _mode == NbdMisbehaviour.ChunkOutsideRequest ? offset + length : offset;
                    var chunk = new byte[20 + 8 + length];
                    BinaryPrimitives.WriteUInt32BigEndian(chunk, NbdMagic.StructuredReply);
                    BinaryPrimitives.WriteUInt16BigEndian(chunk.AsSpan(4), 1);
                    BinaryPrimitives.WriteUInt16BigEndian(chunk.AsSpan(6), (ushort)NbdChunkType.OffsetData);
                    BinaryPrimitives.WriteUInt64BigEndian(chunk.AsSpan(8), cookie);
                    BinaryPrimitives.WriteUInt32BigEndian(chunk.AsSpan(16), 8 + length);
                    BinaryPrimitives.WriteUInt64BigEndian(chunk.AsSpan(20), at);
                    chunk.AsSpan(28).Fill(Fill);
                    await s.SendAsync(chunk);
                    break;
                case NbdCommand.Read:
                    var data = new byte[length];
                    data.AsSpan().Fill(Fill);
                    await SimpleReplyAsync(s, cookie, data);
                    break;
                case NbdCommand.BlockStatus:
                    var status = new byte[20 + 12];
                    BinaryPrimitives.WriteUInt32BigEndian(status, NbdMagic.StructuredReply);
                    BinaryPrimitives.WriteUInt16BigEndian(status.AsSpan(4), 1);
                    BinaryPrimitives.WriteUInt16BigEndian(status.AsSpan(6), (ushort)NbdChunkType.BlockStatus);
                    BinaryPrimitives.WriteUInt64BigEndian(status.AsSpan(8), cookie);
                    BinaryPrimitives.WriteUInt32BigEndian(status.AsSpan(16), 12);
                    BinaryPrimitives.WriteUInt32BigEndian(status.AsSpan(20), 1);
                    BinaryPrimitives.WriteUInt32BigEndian(status.AsSpan(24), length);
                    await s.SendAsync(status);
                    break;
                default:
                    await SimpleReplyAsync(s, cookie, []);
                    break;
            }
        }
    }

    private static async Task SimpleReplyAsync(Socket s, ulong cookie, byte[] data)
    {
        var reply = new byte[16 + data.Length];
        BinaryPrimitives.WriteUInt32BigEndian(reply, NbdMagic.SimpleReply);
        BinaryPrimitives.WriteUInt64BigEndian(reply.AsSpan(8), cookie);
        data.CopyTo(reply, 16);
        await s.SendAsync(reply);
    }

    private static async Task OptionReplyAsync(Socket s, uint option, NbdOptionReplyType type, byte[] data)
    {
        var reply = new byte[20 + data.Length];
        BinaryPrimitives.WriteUInt64BigEndian(reply, NbdMagic.OptionReply);
        BinaryPrimitives.WriteUInt32BigEndian(reply.AsSpan(8), option);
        BinaryPrimitives.WriteUInt32BigEndian(reply.AsSpan(12), (uint)type);
        BinaryPrimitives.WriteUInt32BigEndian(reply.AsSpan(16), (uint)data.Length);
        data.CopyTo(reply, 20);
        await s.SendAsync(reply);
    }

    private async Task<byte[]> ReadAsync(Socket s, int count)
    {
        var buffer = new byte[count];
        int done = 0;
        while (done < count)
        {
            int n = await s.ReceiveAsync(buffer.AsMemory(done), SocketFlags.None, _stop.Token);
            if (n == 0) throw new EndOfStreamException();
            done += n;
        }
        return buffer;
    }

    public void Dispose()
    {
        _stop.Cancel();
        _listener.Dispose();
        try
        {
            _accepting.Wait(TimeSpan.FromSeconds(10));
        }
        catch (AggregateException)
        {
            // Accept ended with the listener.
        }
        File.Delete(SocketPath);
    }
}
