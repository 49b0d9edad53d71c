using System.Buffers.Binary;
using Vdisk.Crypto;
using Vdisk.Graph;
using Vdisk.Native;
using Vdisk.Permissions;

namespace Vdisk.Drivers.Qcow2;

/// <summary>
/// qcow2 encryption as QEMU 7.2 has it: crypt_method 1 (legacy "aes": AES-128-CBC, the key the
/// passphrase's first 16 bytes, IVs plain64 of the guest sector) and 2 ("luks": a LUKS1 header
/// in clusters named by the 0x0537be77 header extension, IVs of the host sector). Data clusters
/// hold ciphertext; requests are in whole 512-byte sectors (QEMU's request alignment with
/// encryption), a partial sector read or read-modify-written whole.
/// </summary>
public sealed partial class Qcow2Node
{
    /// <summary>crypt_method of the header.</summary>
    public const uint CryptAes = 1, CryptLuks = 2;

    private SectorCipher? _crypto;
    private bool _cryptPhysicalOffset;
    private LuksVolume? _luks;
    private string? _keySecret;
    private readonly SemaphoreSlim _unalignedWrites = new(1, 1);

    /// <summary>True for an encrypted image.</summary>
    public bool IsEncrypted => _header.CryptMethod != 0;

    /// <summary>
    /// qcow2_do_open's encryption step: refuses unknown methods, and with I/O needs
    /// <c>encrypt.key-secret</c> and unlocks the key.
    /// </summary>
    private async ValueTask SetUpEncryptionAsync(string? keySecret, string? format, NodeFlags flags, CancellationToken ct)
    {
        uint method = _header.CryptMethod;
        if (method == 0)
        {
            if (format is not null) throw new Options.OptionException($"No encryption in image header, but options specified format '{format}'");
            return;
        }
        if (method is not (CryptAes or CryptLuks)) throw new Qcow2FormatException($"Unsupported encryption method: {method}");
        string headerFormat = method == CryptAes ? "aes" : "luks";
        if (format is not null && format != headerFormat)
            throw new Options.OptionException($"Header reported '{headerFormat}' encryption format but options specify '{format}'");
        byte[]? passphrase = null;
        if ((flags & NodeFlags.NoIo) == 0)
        {
            if (keySecret is null) throw new Options.OptionException("Parameter 'encrypt.key-secret' is required for cipher");
            passphrase = Secrets.LookupPassphrase(keySecret);
        }
        if (method == CryptAes)
        {
            if (passphrase is null) return;
            // qcrypto_block_qcow_init: the passphrase, truncated or padded with zeroes to 16 bytes.
            var key = new byte[16];
            passphrase.AsSpan(0, Math.Min(16, passphrase.Length)).CopyTo(key);
            _crypto = new SectorCipher(CipherAlgorithm.Aes128, CipherMode.Cbc, IvGenAlgorithm.Plain64, CipherAlgorithm.Aes128, HashAlgorithm.Sha256, key);
            _cryptPhysicalOffset = false;
            return;
        }
        _luks = await LuksVolume.OpenAsync(ReadCryptoHeaderAsync, passphrase, ct).ConfigureAwait(false);
        _keySecret = keySecret;
        _crypto = _luks.Cipher;
        _cryptPhysicalOffset = true;
    }

    /// <summary>qcow2_crypto_hdr_read_func: a read inside the LUKS header's clusters.</summary>
    private async ValueTask ReadCryptoHeaderAsync(long offset, Memory<byte> buffer, CancellationToken ct)
    {
        var (start, length) = CryptoHeaderRange() ?? throw new Qcow2FormatException("Missing crypto header for crypt method 2");
        if (offset + buffer.Length > length) throw new NativeIOException(Errno.EINVAL, "Request for data outside of extension header");
        await File.ReadAsync(start + offset, buffer, ct).ConfigureAwait(false);
    }

    /// <summary>qcow2_crypto_hdr_write_func: a write inside the LUKS header's clusters.</summary>
    private async ValueTask WriteCryptoHeaderAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken ct)
    {
        var (start, length) = CryptoHeaderRange() ?? throw new Qcow2FormatException("Missing crypto header for crypt method 2");
        if (offset + data.Length > length) throw new NativeIOException(Errno.EINVAL, "Request for data outside of extension header");
        await File.WriteAsync(start + offset, data, WriteFlags.None, ct).ConfigureAwait(false);
    }

    /// <summary>
    /// qcow2_amend_options' encryption step: the encrypt.* options read as
    /// QCryptoBlockAmendOptionsLUKS and applied to the LUKS header's key slots.
    /// </summary>
    private async ValueTask AmendEncryptionAsync(Options.QemuOpts options, bool force, CancellationToken ct)
    {
        try
        {
            var amend = LuksAmendOptions.From(options.Get, "encrypt.");
            await _luks!.AmendAsync(amend, _keySecret!, force, ReadCryptoHeaderAsync, WriteCryptoHeaderAsync, ct).ConfigureAwait(false);
        }
        catch (Options.OptionException e)
        {
            throw new NativeIOException(Errno.EINVAL, e.Message);
        }
    }

    /// <summary>Where the full disk encryption header extension says the LUKS header lies, or null without one.</summary>
    private (long Offset, long Length)? CryptoHeaderRange()
    {
        var ext = _header.Extensions.FirstOrDefault(e => e.Type == Qcow2Header.ExtensionCrypto);
        if (ext is null || ext.Data.Length < 16) return null;
        return ((long)BinaryPrimitives.ReadUInt64BigEndian(ext.Data), (long)BinaryPrimitives.ReadUInt64BigEndian(ext.Data.AsSpan(8)));
    }

    /// <summary>The "encrypt" member of qemu-img info's qcow2 data (ImageInfoSpecificQCow2Encryption).</summary>
    private Output.QemuJsonObject? EncryptInfo()
    {
        if (!IsEncrypted) return null;
        var o = new Output.QemuJsonObject().Add("format", _header.CryptMethod == CryptAes ? "aes" : "luks");
        if (_luks is not null) foreach (var (k, v) in _luks.Header.InfoData()) o.Add(k, v);
        return o;
    }

    private SectorCipher Crypto => _crypto ?? throw new NativeIOException(Errno.EIO, NativeIOException.Describe(Errno.EIO), Filename);

    /// <summary>The offset whose sectors give the IVs of data at <paramref name="guest"/> stored at <paramref name="host"/>.</summary>
    private long CryptOffset(long guest, long host) => _cryptPhysicalOffset ? host : guest;

    private static bool IsSectorAligned(long offset, long length) => ((offset | length) & (SectorCipher.SectorSize - 1)) == 0;

    /// <summary>A read of an encrypted image that does not cover whole sectors: the covering sectors, then the part asked for.</summary>
    private async ValueTask ReadUnalignedAsync(long offset, Memory<byte> buffer, CancellationToken ct)
    {
        long start = offset & ~(long)(SectorCipher.SectorSize - 1);
        long end = Math.Min((offset + buffer.Length + SectorCipher.SectorSize - 1) & ~(long)(SectorCipher.SectorSize - 1), Math.Max(Length, offset + buffer.Length));
        var bounce = new byte[end - start];
        await ReadAsync(start, bounce, ct).ConfigureAwait(false);
        bounce.AsSpan((int)(offset - start), buffer.Length).CopyTo(buffer.Span);
    }

    /// <summary>A write of an encrypted image that does not cover whole sectors: read, merge, write the covering sectors.</summary>
    private async ValueTask WriteUnalignedAsync(long offset, ReadOnlyMemory<byte> data, WriteFlags flags, CancellationToken ct)
    {
        long start = offset & ~(long)(SectorCipher.SectorSize - 1);
        long end = (offset + data.Length + SectorCipher.SectorSize - 1) & ~(long)(SectorCipher.SectorSize - 1);
        await _unalignedWrites.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            var bounce = new byte[end - start];
            await ReadAsync(start, bounce, ct).ConfigureAwait(false);
            data.Span.CopyTo(bounce.AsSpan((int)(offset - start)));
            await WriteAsync(start, bounce, flags, ct).ConfigureAwait(false);
        }
        finally
        {
            _unalignedWrites.Release();
        }
    }

    /// <summary>Ciphertext of <paramref name="data"/> for guest offset <paramref name="guest"/> at host offset <paramref name="host"/>.</summary>
    private ReadOnlyMemory<byte> EncryptForWrite(long guest, long host, ReadOnlyMemory<byte> data)
    {
        if (_header.CryptMethod == 0) return data;
        var copy = data.ToArray();
        Crypto.Encrypt(CryptOffset(guest, host), copy);
        return copy;
    }

    /// <summary>Decrypts data read from <paramref name="host"/> for guest offset <paramref name="guest"/>.</summary>
    private void DecryptAfterRead(long guest, long host, Span<byte> data)
    {
        if (_header.CryptMethod != 0) Crypto.Decrypt(CryptOffset(guest, host), data);
    }

    /// <summary>
    /// qcow2_set_up_encryption for a new, empty image: "aes" only sets crypt_method; "luks"
    /// writes a LUKS header into new clusters (qcow2_crypto_hdr_init_func zeroes them first) and
    /// names them in the crypto header extension. The header is rewritten and synced.
    /// </summary>
    internal async Task EncryptNewImageAsync(Qcow2Encryption encryption, CancellationToken ct)
    {
        EnsureWritable();
        await LockQuiescedAsync(ct).ConfigureAwait(false);
        try
        {
            await FlushLockedAsync(ct).ConfigureAwait(false);
            if (encryption.Format == "luks")
            {
                long offset = 0, length = 0;
                var volume = await LuksVolume.CreateAsync(encryption.Luks!, encryption.Passphrase, async (headerLength, c) =>
                {
                    long clusters = _g.SizeToClusters(headerLength);
                    offset = await AllocateMetadataAsync(clusters).ConfigureAwait(false);
                    length = headerLength;
                    await File.WriteZeroesAsync(offset, clusters * _g.ClusterSize, ZeroFlags.None, c).ConfigureAwait(false);
                }, (o, d, c) => File.WriteAsync(offset + o, d, WriteFlags.None, c), ct).ConfigureAwait(false);
                var ext = new byte[16];
                BinaryPrimitives.WriteUInt64BigEndian(ext, (ulong)offset);
                BinaryPrimitives.WriteUInt64BigEndian(ext.AsSpan(8), (ulong)length);
                _header.Extensions.RemoveAll(e => e.Type == Qcow2Header.ExtensionCrypto);
                _header.Extensions.Add(new Qcow2HeaderExtension(Qcow2Header.ExtensionCrypto, ext));
                _header.CryptMethod = CryptLuks;
                _luks = volume;
                _crypto = volume.Cipher;
                _cryptPhysicalOffset = true;
            }
            else
            {
                _header.CryptMethod = CryptAes;
            }
            await FlushLockedAsync(ct).ConfigureAwait(false);
            await File.WriteAsync(0, _header.Serialize(), WriteFlags.None, ct).ConfigureAwait(false);
            await SyncFileAsync().ConfigureAwait(false);
        }
        finally
        {
            _lock.Release();
        }
    }
}
