using System.Buffers.Binary;

namespace Vdisk.Crypto;

/// <summary>
/// QEMU's qcrypto_block_cipher_{en,de}crypt_helper: a cipher in a mode with an IV generator,
/// reset at every sector: sector N of a buffer that starts at byte offset O has the IV of sector
/// O/512+N. Any <see cref="BlockCipher"/> in ECB, CBC, CTR or XTS; IVs plain (32-bit sector),
/// plain64, or ESSIV (the sector encrypted with the hash of the key), each as long as the
/// cipher's block (qcrypto_cipher_get_iv_len; none for ECB).
/// </summary>
public sealed class SectorCipher : IDisposable
{
    /// <summary>The sector size of QEMU's crypto formats.</summary>
    public const int SectorSize = 512;

    private readonly CipherMode _mode;
    private readonly IvGenAlgorithm _ivGen;
    private readonly BlockCipher? _cipher;
    private readonly XtsCipher? _xts;
    private readonly BlockCipher? _essiv;
    private readonly int _ivLength;

    /// <summary>A cipher for <paramref name="key"/> (both halves for XTS).</summary>
    /// <param name="algorithm">The cipher of the data key (of each half for XTS).</param>
    /// <param name="mode">ECB, CBC, CTR or XTS.</param>
    /// <param name="ivGen">The IV generator.</param>
    /// <param name="ivCipher">ESSIV's cipher (see <see cref="EssivCipher"/>).</param>
    /// <param name="ivHash">ESSIV's hash.</param>
    /// <param name="key">The key.</param>
    /// <exception cref="Options.OptionException">XTS of a cipher with 8-byte blocks, in the backend's words.</exception>
    public SectorCipher(CipherAlgorithm algorithm, CipherMode mode, IvGenAlgorithm ivGen, CipherAlgorithm ivCipher, HashAlgorithm ivHash, ReadOnlySpan<byte> key)
    {
        _mode = mode;
        _ivGen = ivGen;
        int blockLength = CryptoAlgorithms.BlockLength(algorithm);
        EnsureModeSupported(algorithm, mode);
        if (mode == CipherMode.Xts)
        {
            _xts = new XtsCipher(algorithm, key);
        }
        else
        {
            _cipher = BlockCipher.Create(algorithm, key);
        }
        _ivLength = mode == CipherMode.Ecb ? 0 : blockLength;
        if (ivGen == IvGenAlgorithm.Essiv)
        {
            // qcrypto_ivgen_essiv_init: the hash of the whole key, cut to the IV cipher's key length.
            var digest = CryptoAlgorithms.Hash(ivHash, key);
            _essiv = BlockCipher.Create(ivCipher, digest.AsSpan(0, Math.Min(digest.Length, CryptoAlgorithms.KeyLength(ivCipher))));
        }
    }

    /// <summary>The backend's refusal of a mode for a cipher: nettle's XTS needs 16-byte blocks, so not cast5.</summary>
    /// <exception cref="Options.OptionException">"Unsupported cipher mode xts".</exception>
    public static void EnsureModeSupported(CipherAlgorithm algorithm, CipherMode mode)
    {
        if (mode == CipherMode.Xts && CryptoAlgorithms.BlockLength(algorithm) != 16)
            throw new Options.OptionException($"Unsupported cipher mode {CryptoAlgorithms.Name(mode)}");
    }

    /// <summary>
    /// qcrypto_block_luks_essiv_cipher: ESSIV encrypts with the cipher of the same family whose
    /// key is as long as the hash's digest (dm-crypt's rule), so AES-128 with sha256 makes IVs
    /// with AES-256; cast5 has no ESSIV.
    /// </summary>
    /// <exception cref="Options.OptionException">No cipher of the family has that key length, in QEMU's words.</exception>
    public static CipherAlgorithm EssivCipher(CipherAlgorithm cipher, HashAlgorithm hash)
    {
        int digest = CryptoAlgorithms.DigestLength(hash);
        if (digest == CryptoAlgorithms.KeyLength(cipher)) return cipher;
        var family = CryptoAlgorithms.Family(cipher);
        if (family == CipherFamily.Cast5) throw new Options.OptionException($"Cipher {CryptoAlgorithms.Name(cipher)} not supported with essiv");
        string familyName = family switch { CipherFamily.Aes => "AES", CipherFamily.Serpent => "Serpent", _ => "Twofish" };
        return CryptoAlgorithms.FromLuksName(CryptoAlgorithms.LuksName(family), digest)
            ?? throw new Options.OptionException($"No {familyName} cipher with key size {digest} available");
    }

    /// <summary>Encrypts whole sectors in place; <paramref name="offset"/> (a multiple of 512) picks the IVs.</summary>
    public void Encrypt(long offset, Span<byte> data) => Transform(offset, data, encrypt: true);

    /// <summary>Decrypts whole sectors in place.</summary>
    public void Decrypt(long offset, Span<byte> data) => Transform(offset, data, encrypt: false);

    /// <summary>Sectors per batched cipher call (their IVs, at most 16 bytes each, are 2 KiB on the stack).</summary>
    private const int SectorsPerCall = 128;

    private void Transform(long offset, Span<byte> data, bool encrypt)
    {
        ulong sector = (ulong)offset / SectorSize;
        // XTS, and CBC decryption, run whole sectors in batches: their IVs at once, then one call
        // over all of them (the per-call set-up of the cipher is what costs, not the blocks).
        // CBC encryption chains each block to the one before and stays sector by sector.
        if (_mode == CipherMode.Xts || (_mode == CipherMode.Cbc && !encrypt))
        {
            Span<byte> ivs = stackalloc byte[SectorsPerCall * 16];
            while (data.Length >= SectorSize)
            {
                int sectors = Math.Min(SectorsPerCall, data.Length / SectorSize);
                var batchIvs = ivs[..(sectors * _ivLength)];
                MakeIvs(sector, batchIvs);
                var run = data[..(sectors * SectorSize)];
                if (_mode == CipherMode.Cbc) _cipher!.DecryptCbcUnits(batchIvs, run);
                else if (encrypt) _xts!.EncryptUnits(batchIvs, run);
                else _xts!.DecryptUnits(batchIvs, run);
                data = data[run.Length..];
                sector += (ulong)sectors;
            }
            // A partial last sector (key material whose length is not a multiple of 512) goes below.
        }
        Span<byte> iv = stackalloc byte[16];
        iv = iv[.._ivLength];
        while (!data.IsEmpty)
        {
            int n = Math.Min(data.Length, SectorSize);
            var chunk = data[..n];
            if (_ivLength > 0) MakeIv(sector, iv);
            switch (_mode)
            {
                case CipherMode.Xts:
                    if (encrypt) _xts!.Encrypt(iv, chunk);
                    else _xts!.Decrypt(iv, chunk);
                    break;
                case CipherMode.Cbc:
                    if (encrypt) _cipher!.EncryptCbc(chunk, iv);
                    else _cipher!.DecryptCbc(chunk, iv);
                    break;
                case CipherMode.Ctr:
                    _cipher!.TransformCtr(chunk, iv);
                    break;
                default:
                    if (encrypt) _cipher!.EncryptEcb(chunk, chunk);
                    else _cipher!.DecryptEcb(chunk, chunk);
                    break;
            }
            data = data[n..];
            sector++;
        }
    }

    /// <summary>
    /// The IVs of consecutive sectors from <paramref name="first"/>, one per <c>_ivLength</c> bytes
    /// of <paramref name="ivs"/>, as <see cref="MakeIv"/> makes them; ESSIV encrypts all the
    /// sector numbers in one call.
    /// </summary>
    private void MakeIvs(ulong first, Span<byte> ivs)
    {
        int count = ivs.Length / _ivLength;
        if (_ivGen != IvGenAlgorithm.Essiv)
        {
            for (int i = 0; i < count; i++) MakeIv(first + (ulong)i, ivs.Slice(i * _ivLength, _ivLength));
            return;
        }
        int block = _essiv!.BlockSize;
        Span<byte> numbers = stackalloc byte[SectorsPerCall * 16];
        numbers = numbers[..(count * block)];
        numbers.Clear();
        for (int i = 0; i < count; i++) BinaryPrimitives.WriteUInt64LittleEndian(numbers[(i * block)..], first + (ulong)i);
        _essiv.EncryptEcb(numbers, numbers);
        for (int i = 0; i < count; i++)
        {
            var iv = ivs.Slice(i * _ivLength, _ivLength);
            iv.Clear();
            numbers.Slice(i * block, Math.Min(block, _ivLength)).CopyTo(iv);
        }
    }

    /// <summary>
    /// qcrypto_ivgen_{plain,plain64,essiv}_calculate: the little-endian sector number cut to the
    /// IV's length and zero-padded; ESSIV encrypts one block of the ESSIV cipher made so.
    /// </summary>
    private void MakeIv(ulong sector, Span<byte> iv)
    {
        Span<byte> number = stackalloc byte[16];
        number.Clear();
        switch (_ivGen)
        {
            case IvGenAlgorithm.Plain:
                BinaryPrimitives.WriteUInt32LittleEndian(number, (uint)sector);
                number[..iv.Length].CopyTo(iv);
                break;
            case IvGenAlgorithm.Plain64:
                BinaryPrimitives.WriteUInt64LittleEndian(number, sector);
                number[..iv.Length].CopyTo(iv);
                break;
            default:
                var block = number[.._essiv!.BlockSize];
                BinaryPrimitives.WriteUInt64LittleEndian(number, sector);
                _essiv.EncryptEcb(block, block);
                iv.Clear();
                block[..Math.Min(block.Length, iv.Length)].CopyTo(iv);
                break;
        }
    }

    /// <inheritdoc />
    public void Dispose()
    {
        _cipher?.Dispose();
        _xts?.Dispose();
        _essiv?.Dispose();
    }
}
