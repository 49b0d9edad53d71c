using System.Security.Cryptography;
using Vdisk.Options;

namespace Vdisk.Crypto;

/// <summary>Reads <c>buffer.Length</c> bytes of the container at an offset.</summary>
public delegate ValueTask CryptoReadFunc(long offset, Memory<byte> buffer, CancellationToken cancellationToken);

/// <summary>Writes bytes into the container at an offset.</summary>
public delegate ValueTask CryptoWriteFunc(long offset, ReadOnlyMemory<byte> data, CancellationToken cancellationToken);

/// <summary>The options of a new LUKS volume (QCryptoBlockCreateOptionsLUKS), QEMU's defaults when not given.</summary>
public sealed record LuksCreateOptions
{
    /// <summary>cipher-alg (aes-256).</summary>
    public CipherAlgorithm Cipher { get; init; } = CipherAlgorithm.Aes256;
    /// <summary>cipher-mode (xts).</summary>
    public CipherMode Mode { get; init; } = CipherMode.Xts;
    /// <summary>ivgen-alg (plain64).</summary>
    public IvGenAlgorithm IvGen { get; init; } = IvGenAlgorithm.Plain64;
    /// <summary>ivgen-hash-alg (sha256 for essiv).</summary>
    public HashAlgorithm? IvGenHash { get; init; }
    /// <summary>hash-alg (sha256).</summary>
    public HashAlgorithm Hash { get; init; } = HashAlgorithm.Sha256;
    /// <summary>Milliseconds of PBKDF2 to spend per unlock (QEMU's default 2000).</summary>
    public ulong IterTimeMs { get; init; } = 2000;

    /// <summary>
    /// Reads the create options <c>cipher-alg</c>, <c>cipher-mode</c>, <c>ivgen-alg</c>,
    /// <c>ivgen-hash-alg</c>, <c>hash-alg</c>, <c>iter-time</c> (with <paramref name="prefix"/>,
    /// e.g. "encrypt.") from <paramref name="get"/>, as QEMU's QAPI visitor does: an enum value
    /// it refuses is named by its bare key, a number by its path (<paramref name="visitorPath"/>,
    /// the prefix unless the caller's visitor sees the options without it).
    /// </summary>
    /// <exception cref="OptionException">A value QEMU refuses (its words) or vdisk cannot run.</exception>
    public static LuksCreateOptions From(Func<string, string?> get, string prefix = "", string? visitorPath = null)
    {
        var o = new LuksCreateOptions();
        if (get(prefix + "cipher-alg") is { } alg)
        {
            if (CryptoAlgorithms.ParseCipherOption("cipher-alg", alg) is { } a) o = o with { Cipher = a };
            else o = o with { RefusedCipher = alg };
        }
        if (get(prefix + "cipher-mode") is { } mode)
        {
            var m = CryptoAlgorithms.ParseMode(mode) ?? throw new OptionException($"Parameter 'cipher-mode' does not accept value '{mode}'");
            o = o with { Mode = m };
        }
        if (get(prefix + "ivgen-alg") is { } ivgen)
            o = o with { IvGen = CryptoAlgorithms.ParseIvGen(ivgen) ?? throw new OptionException($"Parameter 'ivgen-alg' does not accept value '{ivgen}'") };
        if (get(prefix + "ivgen-hash-alg") is { } ivHash)
            o = o with { IvGenHash = CryptoAlgorithms.ParseHash(ivHash) ?? throw new OptionException($"Parameter 'ivgen-hash-alg' does not accept value '{ivHash}'") };
        if (get(prefix + "hash-alg") is { } hash)
            o = o with { Hash = CryptoAlgorithms.ParseHash(hash) ?? throw new OptionException($"Parameter 'hash-alg' does not accept value '{hash}'") };
        if (get(prefix + "iter-time") is { } iter)
        {
            // The keyval visitor's int64, kept in QEMU's uint64_t: "-5" is a huge time.
            if (QemuNumber.ParseLong(iter, 0, out long ms) != QemuNumberStatus.Ok)
                throw new OptionException($"Parameter '{visitorPath ?? prefix}iter-time' expects integer");
            o = o with { IterTimeMs = unchecked((ulong)ms) };
        }
        if (o.IvGen == IvGenAlgorithm.Essiv && o.IvGenHash is null) o = o with { IvGenHash = HashAlgorithm.Sha256 };
        return o;
    }

    /// <summary>A cipher QEMU's enum has but its LUKS cannot name (des, 3des): refused by <see cref="Validate"/>.</summary>
    public string? RefusedCipher { get; init; }

    /// <summary>
    /// qcrypto_block_luks_create's checks after the secret, in its order: the cipher's LUKS name,
    /// ESSIV's cipher, then the backend's refusal of XTS for 8-byte blocks.
    /// </summary>
    /// <exception cref="OptionException">QEMU's message.</exception>
    public void Validate()
    {
        if (RefusedCipher is { } refused) throw CryptoAlgorithms.UnsupportedCipher(refused);
        if (IvGen == IvGenAlgorithm.Essiv) SectorCipher.EssivCipher(Cipher, IvGenHash!.Value);
        SectorCipher.EnsureModeSupported(Cipher, Mode);
    }
}

/// <summary>
/// A LUKS1 volume (QEMU's QCryptoBlock of format luks): the header, and once unlocked, the
/// cipher of the payload. Opened without a passphrase (qemu-img info's no-I/O open) it has the
/// header only.
/// </summary>
public sealed partial class LuksVolume : IDisposable
{
    private LuksVolume(LuksHeader header, SectorCipher? cipher)
    {
        Header = header;
        Cipher = cipher;
    }

    /// <summary>The header as read or written.</summary>
    public LuksHeader Header { get; }

    /// <summary>The payload's cipher; null when opened without I/O.</summary>
    public SectorCipher? Cipher { get; }

    /// <summary>Where the payload starts, in bytes.</summary>
    public long PayloadOffset => (long)Header.PayloadOffsetSector * SectorCipher.SectorSize;

    /// <summary>
    /// qcrypto_block_luks_open: reads and checks the header, then (with a passphrase) finds the
    /// key slot it unlocks.
    /// </summary>
    /// <exception cref="LuksFormatException">The header is refused, or no slot opens ("Invalid password, cannot unlock any keyslot").</exception>
    public static async Task<LuksVolume> OpenAsync(CryptoReadFunc read, byte[]? passphrase, CancellationToken cancellationToken = default)
    {
        var bytes = new byte[LuksHeader.Size];
        await read(0, bytes, cancellationToken).ConfigureAwait(false);
        var header = LuksHeader.Read(bytes);
        if (passphrase is null) return new LuksVolume(header, null);
        CryptoAlgorithms.EnsureSupported(header.Hash, forPbkdf2: true);
        for (int i = 0; i < LuksHeader.SlotCount; i++)
        {
            if (await TryUnlockSlotAsync(header, i, passphrase, read, cancellationToken).ConfigureAwait(false) is { } masterKey)
                return new LuksVolume(header, NewCipher(header, masterKey));
        }
        throw new LuksFormatException("Invalid password, cannot unlock any keyslot");
    }

    /// <summary>qcrypto_block_luks_load_key: the master key slot <paramref name="index"/> gives for the passphrase; null for a disabled slot or another passphrase.</summary>
    private static async Task<byte[]?> TryUnlockSlotAsync(LuksHeader header, int index, byte[] passphrase, CryptoReadFunc read, CancellationToken cancellationToken)
    {
        var slot = header.Slots[index];
        if (!slot.IsEnabled) return null;
        var split = new byte[(int)header.KeyBytes * (int)slot.Stripes];
        await read((long)slot.KeyOffsetSector * SectorCipher.SectorSize, split, cancellationToken).ConfigureAwait(false);
        return await Task.Run(() => TryKey(header, slot, passphrase, split), cancellationToken).ConfigureAwait(false);
    }

    private static byte[]? TryKey(LuksHeader header, LuksKeySlot slot, byte[] passphrase, byte[] split)
    {
        int keyLength = (int)header.KeyBytes;
        var slotKey = CryptoAlgorithms.Pbkdf2(header.Hash, passphrase, slot.Salt, (int)Math.Min(slot.Iterations, int.MaxValue), keyLength);
        using (var cipher = NewCipher(header, slotKey)) cipher.Decrypt(0, split);
        var masterKey = AfSplit.Merge(header.Hash, split, keyLength, (int)slot.Stripes);
        var digest = CryptoAlgorithms.Pbkdf2(header.Hash, masterKey, header.MasterKeySalt, (int)Math.Min(header.MasterKeyIterations, int.MaxValue), LuksHeader.DigestLength);
        return CryptographicOperations.FixedTimeEquals(digest, header.MasterKeyDigest) ? masterKey : null;
    }

    private static SectorCipher NewCipher(LuksHeader h, byte[] key) =>
        new(h.CipherAlgorithm, h.CipherMode, h.IvGenAlgorithm, h.IvGenCipher, h.IvGenHash, key);

    /// <summary>
    /// qcrypto_block_luks_create: a new header with a random master key in slot 0, sized by
    /// iter-time as QEMU measures it. <paramref name="reserve"/> gets the payload offset first
    /// (the container makes room for the header), then the header and key material are written.
    /// </summary>
    public static async Task<LuksVolume> CreateAsync(LuksCreateOptions o, byte[] passphrase, Func<long, CancellationToken, ValueTask> reserve, CryptoWriteFunc write, CancellationToken cancellationToken = default)
    {
        o.Validate();
        CryptoAlgorithms.EnsureSupported(o.Hash, forPbkdf2: true);
        if (o.IvGen == IvGenAlgorithm.Essiv) CryptoAlgorithms.EnsureSupported(o.IvGenHash!.Value, forPbkdf2: false);
        var header = new LuksHeader { Uuid = Guid.NewGuid().ToString() };
        header.SetAlgorithms(o.Cipher, o.Mode, o.IvGen, o.IvGenHash, o.Hash);
        int keyLength = (int)header.KeyBytes;
        RandomNumberGenerator.Fill(header.MasterKeySalt);
        var masterKey = RandomNumberGenerator.GetBytes(keyLength);
        await Task.Run(() =>
        {
            ulong iters = CryptoAlgorithms.Pbkdf2IterationsPerSecond(o.Hash, masterKey, header.MasterKeySalt, LuksHeader.DigestLength);
            iters = ScaleIterations(iters, o.IterTimeMs) / 8;
            header.MasterKeyIterations = (uint)Math.Max(Math.Min(iters, uint.MaxValue), 1000);
            header.MasterKeyDigest = CryptoAlgorithms.Pbkdf2(o.Hash, masterKey, header.MasterKeySalt, (int)Math.Min(header.MasterKeyIterations, int.MaxValue), LuksHeader.DigestLength);
        }, cancellationToken).ConfigureAwait(false);

        long slotSectors = header.SplitKeySectors(LuksHeader.Stripes);
        for (int i = 0; i < LuksHeader.SlotCount; i++)
        {
            header.Slots[i].Stripes = LuksHeader.Stripes;
            header.Slots[i].KeyOffsetSector = (uint)(LuksHeader.KeySlotOffset / SectorCipher.SectorSize + slotSectors * i);
        }
        header.PayloadOffsetSector = (uint)(LuksHeader.KeySlotOffset / SectorCipher.SectorSize + slotSectors * LuksHeader.SlotCount);
        var volume = new LuksVolume(header, NewCipher(header, masterKey));
        await reserve(volume.PayloadOffset, cancellationToken).ConfigureAwait(false);
        await volume.StoreKeyAsync(0, passphrase, masterKey, o.IterTimeMs, write, cancellationToken).ConfigureAwait(false);
        return volume;
    }

    /// <summary>
    /// qcrypto_block_luks_store_key: a new salt and iteration count (iter-time of PBKDF2 as
    /// measured here, at least 1000), the master key split and encrypted with the slot key
    /// written to the slot's material, then the header with the slot enabled.
    /// </summary>
    private async Task StoreKeyAsync(int slotIndex, byte[] passphrase, byte[] masterKey, ulong iterTimeMs, CryptoWriteFunc write, CancellationToken cancellationToken)
    {
        var header = Header;
        var slot = header.Slots[slotIndex];
        int keyLength = (int)header.KeyBytes;
        RandomNumberGenerator.Fill(slot.Salt);
        var split = await Task.Run(() =>
        {
            ulong iters = CryptoAlgorithms.Pbkdf2IterationsPerSecond(header.Hash, passphrase, slot.Salt, keyLength);
            iters = ScaleIterations(iters, iterTimeMs);
            if (iters > uint.MaxValue)
                throw new OptionException($"PBKDF iterations {iters} larger than {uint.MaxValue}: Numerical result out of range");
            slot.Iterations = (uint)Math.Max(iters, 1000);
            var slotKey = CryptoAlgorithms.Pbkdf2(header.Hash, passphrase, slot.Salt, (int)Math.Min(slot.Iterations, int.MaxValue), keyLength);
            var material = AfSplit.Split(header.Hash, masterKey, (int)slot.Stripes);
            using (var cipher = NewCipher(header, slotKey)) cipher.Encrypt(0, material);
            return material;
        }, cancellationToken).ConfigureAwait(false);
        await write((long)slot.KeyOffsetSector * SectorCipher.SectorSize, split, cancellationToken).ConfigureAwait(false);
        slot.Active = LuksKeySlot.Enabled;
        await write(0, header.ToArray(), cancellationToken).ConfigureAwait(false);
    }

    /// <summary>iters * iter_time / 1000, refused as QEMU refuses a product that overflows.</summary>
    private static ulong ScaleIterations(ulong iters, ulong iterTimeMs)
    {
        if (iterTimeMs != 0 && iters > ulong.MaxValue / iterTimeMs)
            throw new OptionException($"PBKDF iterations {iters} too large to scale: Numerical result out of range");
        return iters * iterTimeMs / 1000;
    }

    /// <inheritdoc />
    public void Dispose() => Cipher?.Dispose();
}
