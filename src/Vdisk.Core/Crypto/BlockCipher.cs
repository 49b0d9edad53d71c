using System.Buffers;
using System.Security.Cryptography;
using Org.BouncyCastle.Crypto;
using Org.BouncyCastle.Crypto.Engines;
using Org.BouncyCastle.Crypto.Parameters;

namespace Vdisk.Crypto;

/// <summary>
/// One block cipher under one key, in ECB over whole blocks: the primitive the modes (CBC, CTR,
/// XTS in <see cref="SectorCipher"/> and <see cref="XtsCipher"/>) run on. AES is .NET's;
/// twofish, serpent and cast5, which .NET lacks, are BouncyCastle's engines.
/// </summary>
public abstract class BlockCipher : IDisposable
{
    /// <summary>Bytes per block (16; 8 for cast5).</summary>
    public abstract int BlockSize { get; }

    /// <summary>Encrypts whole blocks, each on its own (ECB); <paramref name="source"/> and <paramref name="destination"/> may be the same.</summary>
    public abstract void EncryptEcb(ReadOnlySpan<byte> source, Span<byte> destination);

    /// <summary>Decrypts whole blocks, each on its own (ECB).</summary>
    public abstract void DecryptEcb(ReadOnlySpan<byte> source, Span<byte> destination);

    /// <summary>CBC encryption of whole blocks in place from <paramref name="iv"/> (one block).</summary>
    public virtual void EncryptCbc(Span<byte> data, ReadOnlySpan<byte> iv)
    {
        int bs = BlockSize;
        ReadOnlySpan<byte> previous = iv;
        for (int at = 0; at < data.Length; at += bs)
        {
            var block = data.Slice(at, bs);
            for (int i = 0; i < bs; i++) block[i] ^= previous[i];
            EncryptEcb(block, block);
            previous = block;
        }
    }

    /// <summary>CBC decryption of whole blocks in place.</summary>
    public virtual void DecryptCbc(Span<byte> data, ReadOnlySpan<byte> iv)
    {
        int bs = BlockSize;
        Span<byte> previous = stackalloc byte[bs];
        Span<byte> saved = stackalloc byte[bs];
        iv[..bs].CopyTo(previous);
        for (int at = 0; at < data.Length; at += bs)
        {
            var block = data.Slice(at, bs);
            block.CopyTo(saved);
            DecryptEcb(block, block);
            for (int i = 0; i < bs; i++) block[i] ^= previous[i];
            saved.CopyTo(previous);
        }
    }

    /// <summary>
    /// CBC decryption in place of consecutive units of equal length (whole blocks), each its own
    /// chain from its IV at <paramref name="ivs"/>[i*BlockSize..]: every block is decrypted in one
    /// ECB call and then XORed with the ciphertext block before it (the unit's IV for its first),
    /// which is what CBC decryption is, with one cipher call instead of one per unit.
    /// </summary>
    public void DecryptCbcUnits(ReadOnlySpan<byte> ivs, Span<byte> data)
    {
        int bs = BlockSize;
        int units = ivs.Length / bs;
        if (units == 0 || ivs.Length % bs != 0 || data.Length % units != 0 || data.Length / units % bs != 0)
            throw new ArgumentException("CBC units need one IV each and a length that is a multiple of the block", nameof(data));
        int unit = data.Length / units;
        byte[] rented = ArrayPool<byte>.Shared.Rent(data.Length);
        try
        {
            // What each block is XORed with after decryption: the IV, then the unit's ciphertext shifted by a block.
            var chain = rented.AsSpan(0, data.Length);
            for (int u = 0; u < units; u++)
            {
                var ciphertext = data.Slice(u * unit, unit);
                var before = chain.Slice(u * unit, unit);
                ivs.Slice(u * bs, bs).CopyTo(before);
                ciphertext[..(unit - bs)].CopyTo(before[bs..]);
            }
            DecryptEcb(data, data);
            CipherBuffers.Xor(data, chain);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(rented);
        }
    }

    /// <summary>
    /// CTR in place from the counter block <paramref name="iv"/>, incremented as one big-endian
    /// number per block (nettle's ctr_crypt, QEMU's backend). Encryption and decryption are the same.
    /// </summary>
    public void TransformCtr(Span<byte> data, ReadOnlySpan<byte> iv)
    {
        int bs = BlockSize;
        Span<byte> counter = stackalloc byte[bs];
        Span<byte> stream = stackalloc byte[bs];
        iv[..bs].CopyTo(counter);
        for (int at = 0; at < data.Length; at += bs)
        {
            EncryptEcb(counter, stream);
            var block = data[at..Math.Min(at + bs, data.Length)];
            for (int i = 0; i < block.Length; i++) block[i] ^= stream[i];
            for (int i = bs - 1; i >= 0 && ++counter[i] == 0; i--) { }
        }
    }

    /// <summary>The cipher <paramref name="algorithm"/> under <paramref name="key"/> (of its key length).</summary>
    public static BlockCipher Create(CipherAlgorithm algorithm, ReadOnlySpan<byte> key) => CryptoAlgorithms.Family(algorithm) switch
    {
        CipherFamily.Aes => new AesBlockCipher(key),
        CipherFamily.Twofish => new EngineBlockCipher(() => new TwofishEngine(), key),
        CipherFamily.Serpent => new EngineBlockCipher(() => new SerpentEngine(), key),
        _ => new EngineBlockCipher(() => new Cast5Engine(), key),
    };

    /// <inheritdoc />
    public virtual void Dispose() => GC.SuppressFinalize(this);

    /// <summary>AES through .NET, whose ECB and CBC run many blocks per call.</summary>
    private sealed class AesBlockCipher : BlockCipher
    {
        private readonly Aes _aes;

        public AesBlockCipher(ReadOnlySpan<byte> key)
        {
            _aes = Aes.Create();
            _aes.Key = key.ToArray();
        }

        public override int BlockSize => 16;
        public override void EncryptEcb(ReadOnlySpan<byte> source, Span<byte> destination) => _aes.EncryptEcb(source, destination, PaddingMode.None);
        public override void DecryptEcb(ReadOnlySpan<byte> source, Span<byte> destination) => _aes.DecryptEcb(source, destination, PaddingMode.None);
        public override void EncryptCbc(Span<byte> data, ReadOnlySpan<byte> iv) => _aes.EncryptCbc(data, iv, data, PaddingMode.None);
        public override void DecryptCbc(Span<byte> data, ReadOnlySpan<byte> iv) => _aes.DecryptCbc(data, iv, data, PaddingMode.None);

        public override void Dispose()
        {
            _aes.Dispose();
            base.Dispose();
        }
    }

    /// <summary>
    /// A BouncyCastle engine, one instance per direction (an engine is set up for one) and per
    /// thread: engines keep their working state in fields, and requests in flight decrypt at once.
    /// </summary>
    private sealed class EngineBlockCipher : BlockCipher
    {
        private readonly ThreadLocal<(IBlockCipher Encrypt, IBlockCipher Decrypt)> _engines;

        public EngineBlockCipher(Func<IBlockCipher> newEngine, ReadOnlySpan<byte> key)
        {
            var parameters = new KeyParameter(key);
            _engines = new(() =>
            {
                var encrypt = newEngine();
                var decrypt = newEngine();
                encrypt.Init(true, parameters);
                decrypt.Init(false, parameters);
                return (encrypt, decrypt);
            });
            BlockSize = _engines.Value.Encrypt.GetBlockSize();
        }

        public override int BlockSize { get; }
        public override void EncryptEcb(ReadOnlySpan<byte> source, Span<byte> destination) => Run(_engines.Value.Encrypt, source, destination);
        public override void DecryptEcb(ReadOnlySpan<byte> source, Span<byte> destination) => Run(_engines.Value.Decrypt, source, destination);

        private static void Run(IBlockCipher engine, ReadOnlySpan<byte> source, Span<byte> destination)
        {
            int bs = engine.GetBlockSize();
            for (int at = 0; at < source.Length; at += bs)
                engine.ProcessBlock(source.Slice(at, bs), destination.Slice(at, bs));
        }

        public override void Dispose()
        {
            _engines.Dispose();
            base.Dispose();
        }
    }
}
