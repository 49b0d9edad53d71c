using System.Buffers.Binary;
using System.Net.Sockets;
using Vdisk.Native;

namespace Vdisk.Drivers.Nbd;

/// <summary>
/// A connected socket with exact reads through a small buffer: headers come out of the buffer,
/// large payloads go straight into the caller's memory. Failures become
/// <see cref="NbdChannelException"/> with QEMU's "Failed to read DESC: ..." wording.
/// </summary>
internal sealed class NbdChannel : IDisposable
{
    private readonly Socket _socket;
    private readonly byte[] _buffer = new byte[64 * 1024];
    private int _start;
    private int _end;

    public NbdChannel(Socket socket) => _socket = socket;

    /// <summary>What QEMU's qio_channel_read_all says when the peer closes mid-message.</summary>
    public const string EndOfFileMessage = "Unexpected end-of-file before all data were read";

    public async ValueTask ReadExactlyAsync(Memory<byte> destination, string? what, CancellationToken cancellationToken)
    {
        int buffered = Math.Min(_end - _start, destination.Length);
        if (buffered > 0)
        {
            _buffer.AsSpan(_start, buffered).CopyTo(destination.Span);
            _start += buffered;
            destination = destination[buffered..];
        }
        while (destination.Length > 0)
        {
            int n;
            try
            {
                if (destination.Length >= _buffer.Length)
                {
                    n = await _socket.ReceiveAsync(destination, SocketFlags.None, cancellationToken).ConfigureAwait(false);
                    if (n == 0) throw Failed(what, EndOfFileMessage);
                    destination = destination[n..];
                    continue;
                }
                _start = 0;
                _end = 0;
                n = await _socket.ReceiveAsync(_buffer.AsMemory(), SocketFlags.None, cancellationToken).ConfigureAwait(false);
            }
            catch (SocketException e)
            {
                throw Failed(what, LibC.StrError(e.NativeErrorCode > 0 ? e.NativeErrorCode : Errno.EIO));
            }
            catch (ObjectDisposedException)
            {
                throw Failed(what, "Channel closed");
            }
            if (n == 0) throw Failed(what, EndOfFileMessage);
            _end = n;
            int take = Math.Min(_end, destination.Length);
            _buffer.AsSpan(0, take).CopyTo(destination.Span);
            _start = take;
            destination = destination[take..];
        }
    }

    public async ValueTask<ulong> ReadUInt64Async(string what, CancellationToken ct)
    {
        var b = new byte[8];
        await ReadExactlyAsync(b, what, ct).ConfigureAwait(false);
        return BinaryPrimitives.ReadUInt64BigEndian(b);
    }

    public async ValueTask<uint> ReadUInt32Async(string what, CancellationToken ct)
    {
        var b = new byte[4];
        await ReadExactlyAsync(b, what, ct).ConfigureAwait(false);
        return BinaryPrimitives.ReadUInt32BigEndian(b);
    }

    public async ValueTask<ushort> ReadUInt16Async(string what, CancellationToken ct)
    {
        var b = new byte[2];
        await ReadExactlyAsync(b, what, ct).ConfigureAwait(false);
        return BinaryPrimitives.ReadUInt16BigEndian(b);
    }

    public async ValueTask SkipAsync(long count, string what, CancellationToken ct)
    {
        var scratch = new byte[(int)Math.Min(Math.Max(count, 1), 64 * 1024)];
        while (count > 0)
        {
            int n = (int)Math.Min(count, scratch.Length);
            await ReadExactlyAsync(scratch.AsMemory(0, n), what, ct).ConfigureAwait(false);
            count -= n;
        }
    }

    /// <summary>Sends every byte of <paramref name="data"/>.</summary>
    public async ValueTask WriteAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        try
        {
            while (data.Length > 0)
            {
                int n = await _socket.SendAsync(data, SocketFlags.None, cancellationToken).ConfigureAwait(false);
                data = data[n..];
            }
        }
        catch (SocketException e)
        {
            throw new NbdChannelException(LibC.StrError(e.NativeErrorCode > 0 ? e.NativeErrorCode : Errno.EIO));
        }
        catch (ObjectDisposedException)
        {
            throw new NbdChannelException("Channel closed");
        }
    }

    /// <summary>Stops both directions, which wakes a reader blocked on the socket.</summary>
    public void Shutdown()
    {
        try
        {
            _socket.Shutdown(SocketShutdown.Both);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            // Already gone.
        }
    }

    public void Dispose()
    {
        Shutdown();
        _socket.Dispose();
    }

    private static NbdChannelException Failed(string? what, string reason) =>
        new(what is null ? reason : $"Failed to read {what}: {reason}");
}

/// <summary>The connection broke (EOF, reset): the request may be retried on a new connection.</summary>
internal sealed class NbdChannelException(string message) : IOException(message);

/// <summary>
/// The server broke the protocol: the connection is dropped for good. The request fails with
/// <see cref="Errno"/>: EINVAL for a bad chunk, EIO for a bad reply header (QEMU 7.2 reports
/// those as "Connection closed").
/// </summary>
internal sealed class NbdProtocolException(string message, int errno = Native.Errno.EINVAL) : IOException(message)
{
    public int Errno { get; } = errno;
}
