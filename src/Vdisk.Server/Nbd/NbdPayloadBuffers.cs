using System.Buffers;
using System.Numerics;

namespace Vdisk.Server.Nbd;

/// <summary>
/// The payload buffers (read data, write data) of a server's connections, kept for reuse. A
/// client keeps a steady queue of same-sized requests in flight (nbdcopy: 64 of 256 KiB per
/// connection), more than <see cref="ArrayPool{T}.Shared"/> holds per size (32 per core), and
/// opens new connections for every copy: without this, most requests got a new large array,
/// whose fresh pages the kernel then faulted in one by one while it copied the data into them
/// (a quarter of the daemon's CPU time in nbdcopy's reads). Up to <see cref="RetainLimit"/>
/// bytes are kept (qemu-storage-daemon's heap keeps about half that after such a copy); the
/// rest go back to the shared pool.
/// </summary>
internal sealed class NbdPayloadBuffers
{
    /// <summary>Bytes of free buffers kept at most: the queues of two nbdcopy connections.</summary>
    public const long RetainLimit = 32L * 1024 * 1024;

    private readonly Lock _lock = new();
    // Free buffers by size class: the shared pool's arrays are powers of two, the index is log2.
    private readonly Stack<byte[]>?[] _free = new Stack<byte[]>?[32];
    private long _retained;

    /// <summary>Bytes kept free now.</summary>
    public long Retained
    {
        get
        {
            lock (_lock) return _retained;
        }
    }

    /// <summary>A buffer of at least <paramref name="length"/> bytes (contents undefined); give it back with <see cref="Return"/>.</summary>
    public byte[] Rent(int length)
    {
        int sizeClass = SizeClass(length);
        lock (_lock)
        {
            if (_free[sizeClass] is { Count: > 0 } free)
            {
                var buffer = free.Pop();
                _retained -= buffer.Length;
                return buffer;
            }
        }
        return ArrayPool<byte>.Shared.Rent(length);
    }

    /// <summary>Takes a buffer back from <see cref="Rent"/>.</summary>
    public void Return(byte[] buffer)
    {
        if (BitOperations.IsPow2(buffer.Length))
        {
            lock (_lock)
            {
                if (_retained + buffer.Length <= RetainLimit)
                {
                    (_free[BitOperations.Log2((uint)buffer.Length)] ??= new Stack<byte[]>()).Push(buffer);
                    _retained += buffer.Length;
                    return;
                }
            }
        }
        ArrayPool<byte>.Shared.Return(buffer);
    }

    /// <summary>The size class of the array the shared pool rents for <paramref name="length"/> bytes.</summary>
    private static int SizeClass(int length) => BitOperations.Log2(BitOperations.RoundUpToPowerOf2((uint)Math.Max(length, 16)));
}
