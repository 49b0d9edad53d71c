using System.Buffers.Binary;
using System.Security.Cryptography;

namespace Vdisk.TestSupport;

/// <summary>
/// Data that looks random (incompressible, different everywhere) but is the same on every run:
/// SHA-256 of a label and a block counter. Tests use it where the content must not compress or
/// a workload must vary; no test draws random numbers of its own (only CsCheck does, from a seed it reports).
/// </summary>
internal sealed class DeterministicData(string label)
{
    private readonly byte[] _label = System.Text.Encoding.UTF8.GetBytes(label);
    private readonly byte[] _block = new byte[32];
    private long _counter;
    private int _used = 32;

    /// <summary><paramref name="length"/> bytes of the sequence named <paramref name="label"/>.</summary>
    public static byte[] Bytes(int length, string label)
    {
        var bytes = new byte[length];
        new DeterministicData(label).Fill(bytes);
        return bytes;
    }

    /// <summary>Fills <paramref name="destination"/> with the next bytes of the sequence.</summary>
    public void Fill(Span<byte> destination)
    {
        for (int i = 0; i < destination.Length; i++) destination[i] = NextByte();
    }

    /// <summary>The next number in [<paramref name="min"/>, <paramref name="max"/>).</summary>
    public long Next(long min, long max)
    {
        Span<byte> eight = stackalloc byte[8];
        Fill(eight);
        return min + (long)(BinaryPrimitives.ReadUInt64LittleEndian(eight) % (ulong)(max - min));
    }

    private byte NextByte()
    {
        if (_used == _block.Length)
        {
            var input = new byte[_label.Length + 8];
            _label.CopyTo(input, 0);
            BinaryPrimitives.WriteInt64LittleEndian(input.AsSpan(_label.Length), _counter++);
            SHA256.HashData(input, _block);
            _used = 0;
        }
        return _block[_used++];
    }
}
