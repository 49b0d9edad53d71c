using System.Buffers;
using System.Buffers.Binary;

namespace Vdisk.Crypto;

/// <summary>
/// XTS (IEEE 1619) over a 16-byte block cipher's ECB: the data key encrypts each block between
/// two XORs with the tweak, the tweak key encrypts the 16-byte IV into the first tweak, and each
/// next tweak is the last times alpha in GF(2^128). A tail shorter than a block is handled by
/// ciphertext stealing. .NET has no XTS mode; the IEEE 1619 vectors are in the unit tests.
/// </summary>
public sealed class XtsCipher : IDisposable
{
    private const int BlockSize = 16;
    private readonly BlockCipher _data;
    private readonly BlockCipher _tweak;

    /// <summary>A cipher for <paramref name="key"/>: the data key, then the tweak key, each a key of <paramref name="algorithm"/>.</summary>
    public XtsCipher(CipherAlgorithm algorithm, ReadOnlySpan<byte> key)
    {
        int half = CryptoAlgorithms.KeyLength(algorithm);
        if (key.Length != 2 * half) throw new ArgumentException("XTS needs two keys of the cipher's length", nameof(key));
        _data = BlockCipher.Create(algorithm, key[..half]);
        _tweak = BlockCipher.Create(algorithm, key[half..]);
        if (_data.BlockSize != BlockSize) throw new ArgumentException("XTS needs a 16-byte block cipher", nameof(algorithm));
    }

    /// <summary>Encrypts one data unit in place; <paramref name="iv"/> is the 16-byte tweak input.</summary>
    public void Encrypt(ReadOnlySpan<byte> iv, Span<byte> data) => Transform(iv, data, encrypt: true);

    /// <summary>Decrypts one data unit in place.</summary>
    public void Decrypt(ReadOnlySpan<byte> iv, Span<byte> data) => Transform(iv, data, encrypt: false);

    /// <summary>
    /// Encrypts consecutive data units of equal length (a multiple of 16) in place, unit i with
    /// the tweak input at <paramref name="ivs"/>[16i..16i+16]: the same as <see cref="Encrypt"/>
    /// per unit, with the ciphers called once per batch of units rather than twice per unit.
    /// </summary>
    public void EncryptUnits(ReadOnlySpan<byte> ivs, Span<byte> data) => TransformUnits(ivs, data, encrypt: true);

    /// <summary>Decrypts consecutive data units in place (see <see cref="EncryptUnits"/>).</summary>
    public void DecryptUnits(ReadOnlySpan<byte> ivs, Span<byte> data) => TransformUnits(ivs, data, encrypt: false);

    private void Transform(ReadOnlySpan<byte> iv, Span<byte> data, bool encrypt)
    {
        if (data.Length < BlockSize) throw new ArgumentException("XTS needs at least one block", nameof(data));
        int tail = data.Length % BlockSize;
        // With a tail, the last full block is done with stealing below.
        int bulk = (tail == 0 ? data.Length : data.Length - tail - BlockSize);
        Span<byte> t = stackalloc byte[BlockSize];
        if (bulk > 0) TransformUnits(iv[..BlockSize], data[..bulk], encrypt, t);
        else _tweak.EncryptEcb(iv[..BlockSize], t);
        if (tail == 0) return;

        int plain = bulk / BlockSize;
        var last = data.Slice(plain * BlockSize, BlockSize);
        var partial = data.Slice((plain + 1) * BlockSize, tail);
        Span<byte> cc = stackalloc byte[BlockSize];
        if (encrypt)
        {
            last.CopyTo(cc);
            Block(cc, t, encrypt: true);
            MultiplyByAlpha(t);
            Span<byte> pp = stackalloc byte[BlockSize];
            partial.CopyTo(pp);
            cc[tail..].CopyTo(pp[tail..]);
            cc[..tail].CopyTo(partial);
            Block(pp, t, encrypt: true);
            pp.CopyTo(last);
        }
        else
        {
            Span<byte> next = stackalloc byte[BlockSize];
            t.CopyTo(next);
            MultiplyByAlpha(next);
            last.CopyTo(cc);
            Block(cc, next, encrypt: false);
            Span<byte> pp = stackalloc byte[BlockSize];
            partial.CopyTo(pp);
            cc[tail..].CopyTo(pp[tail..]);
            cc[..tail].CopyTo(partial);
            Block(pp, t, encrypt: false);
            pp.CopyTo(last);
        }
    }

    /// <summary>Bytes of data per ECB call: large enough that the per-call cost of the cipher (a fresh OpenSSL context for .NET's one-shot ECB) is negligible.</summary>
    private const int BatchBytes = 64 * 1024;

    private void TransformUnits(ReadOnlySpan<byte> ivs, Span<byte> data, bool encrypt) => TransformUnits(ivs, data, encrypt, default);

    /// <summary>
    /// The units' first tweaks in one ECB call of the tweak key, every block's tweak laid out in
    /// a buffer as long as the data, XORed in, one ECB call of the data key, XORed again.
    /// <paramref name="nextTweak"/>, when not empty, receives the tweak after the last block
    /// (ciphertext stealing of a single unit goes on from it).
    /// </summary>
    private void TransformUnits(ReadOnlySpan<byte> ivs, Span<byte> data, bool encrypt, Span<byte> nextTweak)
    {
        int units = ivs.Length / BlockSize;
        if (units == 0 || ivs.Length % BlockSize != 0 || data.Length % units != 0 || data.Length / units % BlockSize != 0)
            throw new ArgumentException("XTS units need one 16-byte tweak input each and a length that is a multiple of 16", nameof(data));
        int unitSize = data.Length / units;
        int unitsPerBatch = Math.Max(1, BatchBytes / unitSize);
        byte[] tweaks = ArrayPool<byte>.Shared.Rent(Math.Min(units, unitsPerBatch) * (unitSize + BlockSize));
        try
        {
            for (int first = 0; first < units; first += unitsPerBatch)
            {
                int count = Math.Min(unitsPerBatch, units - first);
                var run = data.Slice(first * unitSize, count * unitSize);
                var blockTweaks = tweaks.AsSpan(0, run.Length);
                var unitTweaks = tweaks.AsSpan(run.Length, count * BlockSize);
                _tweak.EncryptEcb(ivs.Slice(first * BlockSize, count * BlockSize), unitTweaks);
                for (int u = 0; u < count; u++)
                {
                    ulong lo = BinaryPrimitives.ReadUInt64LittleEndian(unitTweaks[(u * BlockSize)..]);
                    ulong hi = BinaryPrimitives.ReadUInt64LittleEndian(unitTweaks[(u * BlockSize + 8)..]);
                    var unit = blockTweaks.Slice(u * unitSize, unitSize);
                    for (int at = 0; at < unitSize; at += BlockSize)
                    {
                        BinaryPrimitives.WriteUInt64LittleEndian(unit[at..], lo);
                        BinaryPrimitives.WriteUInt64LittleEndian(unit[(at + 8)..], hi);
                        MultiplyByAlpha(ref lo, ref hi);
                    }
                    if (!nextTweak.IsEmpty)
                    {
                        BinaryPrimitives.WriteUInt64LittleEndian(nextTweak, lo);
                        BinaryPrimitives.WriteUInt64LittleEndian(nextTweak[8..], hi);
                    }
                }
                CipherBuffers.Xor(run, blockTweaks);
                if (encrypt) _data.EncryptEcb(run, run);
                else _data.DecryptEcb(run, run);
                CipherBuffers.Xor(run, blockTweaks);
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(tweaks);
        }
    }

    private void Block(Span<byte> block, ReadOnlySpan<byte> t, bool encrypt)
    {
        Span<byte> x = stackalloc byte[BlockSize];
        for (int i = 0; i < BlockSize; i++) x[i] = (byte)(block[i] ^ t[i]);
        if (encrypt) _data.EncryptEcb(x, block);
        else _data.DecryptEcb(x, block);
        for (int i = 0; i < BlockSize; i++) block[i] ^= t[i];
    }

    /// <summary>The tweak as two little-endian halves times alpha in GF(2^128) (IEEE 1619).</summary>
    private static void MultiplyByAlpha(ref ulong lo, ref ulong hi)
    {
        ulong carry = hi >> 63;
        hi = (hi << 1) | (lo >> 63);
        lo = (lo << 1) ^ (0x87UL & (0UL - carry));
    }

    /// <summary>t = t * alpha in GF(2^128), little-endian byte order (IEEE 1619).</summary>
    private static void MultiplyByAlpha(Span<byte> t)
    {
        int carry = t[15] >> 7;
        for (int i = 15; i > 0; i--) t[i] = (byte)((t[i] << 1) | (t[i - 1] >> 7));
        t[0] = (byte)((t[0] << 1) ^ (carry != 0 ? 0x87 : 0));
    }

    /// <inheritdoc />
    public void Dispose()
    {
        _data.Dispose();
        _tweak.Dispose();
    }
}
