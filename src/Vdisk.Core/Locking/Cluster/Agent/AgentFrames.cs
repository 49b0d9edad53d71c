using System.Buffers.Binary;

namespace Vdisk.Locking.Cluster.Agent;

/// <summary>
/// The framing between vdisk and its etcd helper (<c>vdisk-etcd</c>): a 4-byte big-endian length,
/// then that many bytes of UTF-8 JSON (one <see cref="AgentRequest"/> or <see cref="AgentResponse"/>).
/// </summary>
public static class AgentFrames
{
    /// <summary>The largest frame either side accepts: far above any lock key set, small enough to refuse garbage.</summary>
    public const int MaxLength = 16 << 20;

    /// <summary>Writes one frame and flushes.</summary>
    public static async Task WriteAsync(Stream stream, ReadOnlyMemory<byte> payload, CancellationToken cancellationToken)
    {
        if (payload.Length > MaxLength) throw new AgentProtocolException($"frame of {payload.Length} bytes is over the limit of {MaxLength}");
        var frame = new byte[4 + payload.Length];
        BinaryPrimitives.WriteInt32BigEndian(frame, payload.Length);
        payload.CopyTo(frame.AsMemory(4));
        await stream.WriteAsync(frame, cancellationToken).ConfigureAwait(false);
        await stream.FlushAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Reads one frame; null at a clean end of the stream (between frames).</summary>
    /// <exception cref="AgentProtocolException">The stream ended inside a frame, or a length is out of range.</exception>
    public static async Task<byte[]?> ReadAsync(Stream stream, CancellationToken cancellationToken)
    {
        var header = new byte[4];
        int got = await ReadFullyAsync(stream, header, cancellationToken).ConfigureAwait(false);
        if (got == 0) return null;
        if (got < header.Length) throw new AgentProtocolException("the stream ended inside a frame header");
        int length = BinaryPrimitives.ReadInt32BigEndian(header);
        if (length is < 0 or > MaxLength) throw new AgentProtocolException($"frame length {length} is out of range");
        var payload = new byte[length];
        if (await ReadFullyAsync(stream, payload, cancellationToken).ConfigureAwait(false) < length)
            throw new AgentProtocolException("the stream ended inside a frame");
        return payload;
    }

    private static async Task<int> ReadFullyAsync(Stream stream, byte[] buffer, CancellationToken cancellationToken)
    {
        int done = 0;
        while (done < buffer.Length)
        {
            int n = await stream.ReadAsync(buffer.AsMemory(done), cancellationToken).ConfigureAwait(false);
            if (n == 0) break;
            done += n;
        }
        return done;
    }
}

/// <summary>A frame or message between vdisk and its etcd helper that is not what the protocol allows.</summary>
public sealed class AgentProtocolException(string message) : IOException(message);
