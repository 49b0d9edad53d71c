using System.Net.Sockets;

namespace Vdisk.Server.Nbd;

/// <summary>
/// The sending half of a connection. Replies of concurrent requests may go out in any order,
/// but each reply's bytes must not interleave with another's: a reply is sent while holding
/// the channel (<see cref="AcquireAsync"/>), and header and payload leave in one gather write.
/// </summary>
internal sealed class NbdReplyChannel
{
    private readonly Socket _socket;
    private readonly SemaphoreSlim _lock = new(1, 1);
    private readonly List<ArraySegment<byte>> _segments = new(2);
    private readonly byte[] _header = new byte[NbdStructuredReply.HoleLength];

    public NbdReplyChannel(Socket socket) => _socket = socket;

    /// <summary>Takes the channel for one reply (possibly several chunks).</summary>
    public async ValueTask<Lease> AcquireAsync(CancellationToken cancellationToken)
    {
        await _lock.WaitAsync(cancellationToken).ConfigureAwait(false);
        return new Lease(this);
    }

    /// <summary>Sends one message as a whole.</summary>
    public async ValueTask SendAsync(ReadOnlyMemory<byte> message, CancellationToken cancellationToken)
    {
        using var lease = await AcquireAsync(cancellationToken).ConfigureAwait(false);
        await lease.SendAsync(message, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>The right to send one reply; dispose to let the next reply go.</summary>
    public readonly struct Lease : IDisposable
    {
        private readonly NbdReplyChannel _channel;

        internal Lease(NbdReplyChannel channel) => _channel = channel;

        /// <summary>Scratch space for a header, valid until the lease ends.</summary>
        public byte[] Header => _channel._header;

        /// <summary>Sends bytes.</summary>
        public async ValueTask SendAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
        {
            while (data.Length > 0)
            {
                int n = await _channel._socket.SendAsync(data, SocketFlags.None, cancellationToken).ConfigureAwait(false);
                data = data[n..];
            }
        }

        /// <summary>Sends a header and a payload with one gather write.</summary>
        public async ValueTask SendAsync(ArraySegment<byte> header, ArraySegment<byte> payload, CancellationToken cancellationToken)
        {
            if (payload.Count == 0)
            {
                await SendAsync(header.AsMemory(), cancellationToken).ConfigureAwait(false);
                return;
            }
            var segments = _channel._segments;
            segments.Clear();
            segments.Add(header);
            segments.Add(payload);
            int sent = await _channel._socket.SendAsync(segments, SocketFlags.None).ConfigureAwait(false);
            int total = header.Count + payload.Count;
            if (sent < total)
            {
                // A short gather write: send what is left piecewise.
                if (sent < header.Count)
                {
                    await SendAsync(header.AsMemory(sent), cancellationToken).ConfigureAwait(false);
                    sent = header.Count;
                }
                await SendAsync(payload.AsMemory(sent - header.Count), cancellationToken).ConfigureAwait(false);
            }
        }

        /// <inheritdoc />
        public void Dispose() => _channel._lock.Release();
    }
}
