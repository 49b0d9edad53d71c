using System.Buffers.Binary;
using System.Security.Cryptography;

namespace Vdisk.Crypto;

/// <summary>
/// QEMU's qcrypto_block_cipher_{en,de}crypt_helper: a cipher in a mode with an IV generator,
/// reset at every sector: sector N of a buffer that starts at byte offset O has the IV of sector
/// O/512+N. AES in ECB, CBC or XTS; IVs plain (32-bit sector), plain64, or ESSIV (the sector
/// encrypted with the hash of the key).
/// </summary>
public sealed class SectorCipher : IDisposable
{
    /// <summary>The sector size of QEMU's crypto formats.</summary>
    public const int SectorSize = 512;

    private readonly CipherMode _mode;
    private readonly IvGenAlgorithm _ivGen;
    private readonly Aes? _aes;
    private readonly XtsAes? _xts;
    private readonly Aes? _essiv;
    private readonly int _ivLength;

    /// <summary>A cipher for <paramref name="key"/> (both halves for XTS).</summary>
    /// <param name="algorithm">The AES variant of the data key (of each half for XTS).</param>
    /// <param name="mode">ECB, CBC or XTS.</param>
    /// <param name="ivGen">The IV generator.</param>
    /// <param name="ivCipher">ESSIV's cipher (see <see cref="EssivCipher"/>).</param>
    /// <param name="ivHash">ESSIV's hash.</param>
    /// <param name="key">The key.</param>
    public SectorCipher(CipherAlgorithm algorithm, CipherMode mode, IvGenAlgorithm ivGen, CipherAlgorithm ivCipher, HashAlgorithm ivHash, ReadOnlySpan<byte> key)
    {
        _mode = mode;
        _ivGen = ivGen;
        switch (mode)
        {
            case CipherMode.Xts:
                _xts = new XtsAes(key);
                break;
            case CipherMode.Ecb or CipherMode.Cbc:
                _aes = Aes.Create();
                _aes.Key = key.ToArray();
                break;
            default:
                throw new Options.OptionException($"vdisk does not support the cipher mode '{CryptoAlgorithms.Name(mode)}'");
        }
        _ivLength = mode == CipherMode.Ecb ? 0 : 16;
        if (ivGen == IvGenAlgorithm.Essiv)
        {
            var digest = CryptoAlgorithms.Hash(ivHash, key);
            _essiv = Aes.Create();
            _essiv.Key = digest[..Math.Min(digest.Length, CryptoAlgorithms.KeyLength(ivCipher))];
        }
        _ = algorithm;
    }

    /// <summary>
    /// qcrypto_block_luks_essiv_cipher: ESSIV encrypts with the cipher whose key is as long as
    /// the hash's digest (dm-crypt's rule), so AES-128 with sha256 makes IVs with AES-256.
    /// </summary>
    /// <exception cref="Options.OptionException">No AES variant has that key length.</exception>
    public static CipherAlgorithm EssivCipher(CipherAlgorithm cipher, HashAlgorithm hash)
    {
        int digest = CryptoAlgorithms.DigestLength(hash);
        if (digest == CryptoAlgorithms.KeyLength(cipher)) return cipher;
        return CryptoAlgorithms.AesWithKeyLength(digest) ?? throw new Options.OptionException($"No AES cipher with key size {digest} available");
    }

    /// <summary>Encrypts whole sectors in place; <paramref name="offset"/> (a multiple of 512) picks the IVs.</summary>
    public void Encrypt(long offset, Span<byte> data) => Transform(offset, data, encrypt: true);

    /// <summary>Decrypts whole sectors in place.</summary>
    public void Decrypt(long offset, Span<byte> data) => Transform(offset, data, encrypt: false);

    private void Transform(long offset, Span<byte> data, bool encrypt)
    {
        ulong sector = (ulong)offset / SectorSize;
        // Sectors in batches, so that each batch's IVs and data are a few cipher calls, not one per sector or block.
        const int batchSectors = 128;
        Span<byte> ivs = stackalloc byte[batchSectors * 16];
        while (!data.IsEmpty)
        {
            int n = Math.Min(data.Length, batchSectors * SectorSize);
            int sectors = (n + SectorSize - 1) / SectorSize;
            var batch = data[..n];
            var batchIvs = ivs[..(sectors * 16)];
            if (_ivLength > 0) MakeIvs(sector, batchIvs);
            if (_mode == CipherMode.Xts && n % SectorSize == 0)
            {
                if (encrypt) _xts!.EncryptUnits(batchIvs, batch, SectorSize);
                else _xts!.DecryptUnits(batchIvs, batch, SectorSize);
            }
            else if (_mode == CipherMode.Ecb)
            {
                if (encrypt) _aes!.EncryptEcb(batch, batch, PaddingMode.None);
                else _aes!.DecryptEcb(batch, batch, PaddingMode.None);
            }
            else
            {
                for (int i = 0; i < sectors; i++)
                {
                    var chunk = batch[(i * SectorSize)..Math.Min(n, (i + 1) * SectorSize)];
                    var iv = batchIvs.Slice(i * 16, 16);
                    if (_mode == CipherMode.Xts)
                    {
                        if (encrypt) _xts!.Encrypt(iv, chunk);
                        else _xts!.Decrypt(iv, chunk);
                    }
                    else if (encrypt) _aes!.EncryptCbc(chunk, iv, chunk, PaddingMode.None);
                    else _aes!.DecryptCbc(chunk, iv, chunk, PaddingMode.None);
                }
            }
            data = data[n..];
            sector += (ulong)sectors;
        }
    }

    /// <summary>The IVs of <c>ivs.Length / 16</c> sectors from <paramref name="sector"/> on.</summary>
    private void MakeIvs(ulong sector, Span<byte> ivs)
    {
        ivs.Clear();
        for (int i = 0; i < ivs.Length / 16; i++)
        {
            var iv = ivs.Slice(i * 16, 16);
            if (_ivGen == IvGenAlgorithm.Plain) BinaryPrimitives.WriteUInt32LittleEndian(iv, (uint)(sector + (ulong)i));
            else BinaryPrimitives.WriteUInt64LittleEndian(iv, sector + (ulong)i);
        }
        if (_ivGen == IvGenAlgorithm.Essiv) _essiv!.EncryptEcb(ivs, ivs, PaddingMode.None);
    }

    /// <inheritdoc />
    public void Dispose()
    {
        _aes?.Dispose();
        _xts?.Dispose();
        _essiv?.Dispose();
    }
}
