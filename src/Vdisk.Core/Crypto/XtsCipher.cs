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

    private void Transform(ReadOnlySpan<byte> iv, Span<byte> data, bool encrypt)
    {
        if (data.Length < BlockSize) throw new ArgumentException("XTS needs at least one block", nameof(data));
        Span<byte> t = stackalloc byte[BlockSize];
        _tweak.EncryptEcb(iv[..BlockSize], t);
        int full = data.Length / BlockSize;
        int tail = data.Length % BlockSize;
        // With a tail, the last full block is done with stealing below.
        int plain = tail == 0 ? full : full - 1;
        // All tweaks first, so the cipher runs over the whole run in one ECB call (AES's is vectorised).
        int bulk = plain * BlockSize;
        Span<byte> tweaks = bulk <= 4096 ? stackalloc byte[bulk] : new byte[bulk];
        for (int i = 0; i < plain; i++)
        {
            t.CopyTo(tweaks.Slice(i * BlockSize, BlockSize));
            MultiplyByAlpha(t);
        }
        var run = data[..bulk];
        Xor(run, tweaks);
        if (encrypt) _data.EncryptEcb(run, run);
        else _data.DecryptEcb(run, run);
        Xor(run, tweaks);
        if (tail == 0) return;

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

    private void Block(Span<byte> block, ReadOnlySpan<byte> t, bool encrypt)
    {
        Span<byte> x = stackalloc byte[BlockSize];
        for (int i = 0; i < BlockSize; i++) x[i] = (byte)(block[i] ^ t[i]);
        if (encrypt) _data.EncryptEcb(x, block);
        else _data.DecryptEcb(x, block);
        for (int i = 0; i < BlockSize; i++) block[i] ^= t[i];
    }

    private static void Xor(Span<byte> data, ReadOnlySpan<byte> with)
    {
        var d = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ulong>(data);
        var w = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ulong>(with);
        for (int i = 0; i < d.Length; i++) d[i] ^= w[i];
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
