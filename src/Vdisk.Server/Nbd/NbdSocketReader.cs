using System.Net.Sockets;

namespace Vdisk.Server.Nbd;

/// <summary>
/// Reads exact byte counts from a socket through a small buffer: headers come out of the buffer,
/// large payloads go straight from the socket into the caller's memory without a copy.
/// </summary>
internal sealed class NbdSocketReader
{
    private readonly Socket _socket;
    private readonly byte[] _buffer = new byte[16 * 1024];
    private int _start;
    private int _end;

    public NbdSocketReader(Socket socket) => _socket = socket;

    /// <summary>Fills <paramref name="destination"/>; throws <see cref="EndOfStreamException"/> when the peer closes first.</summary>
    public async ValueTask ReadExactlyAsync(Memory<byte> destination, CancellationToken cancellationToken)
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
            if (destination.Length >= _buffer.Length)
            {
                int n = await _socket.ReceiveAsync(destination, SocketFlags.None, cancellationToken).ConfigureAwait(false);
                if (n == 0) throw new EndOfStreamException();
                destination = destination[n..];
                continue;
            }
            _start = 0;
            _end = await _socket.ReceiveAsync(_buffer.AsMemory(), SocketFlags.None, cancellationToken).ConfigureAwait(false);
            if (_end == 0) throw new EndOfStreamException();
            int take = Math.Min(_end, destination.Length);
            _buffer.AsSpan(0, take).CopyTo(destination.Span);
            _start = take;
            destination = destination[take..];
        }
    }

    /// <summary>Reads and drops <paramref name="count"/> bytes.</summary>
    public async ValueTask SkipAsync(long count, CancellationToken cancellationToken)
    {
        var scratch = new byte[(int)Math.Min(count, 64 * 1024)];
        while (count > 0)
        {
            int n = (int)Math.Min(count, scratch.Length);
            await ReadExactlyAsync(scratch.AsMemory(0, n), cancellationToken).ConfigureAwait(false);
            count -= n;
        }
    }
}
