using System.Buffers.Binary;
using System.Text;

namespace Vdisk.Crypto;

/// <summary>One LUKS1 key slot (48 bytes on disk, big-endian).</summary>
public sealed class LuksKeySlot
{
    /// <summary>The active value of a slot in use.</summary>
    public const uint Enabled = 0x00AC71F3;
    /// <summary>The active value of an unused slot.</summary>
    public const uint Disabled = 0x0000DEAD;

    /// <summary>The slot's state word.</summary>
    public uint Active { get; set; } = Disabled;
    /// <summary>PBKDF2 iterations of the passphrase.</summary>
    public uint Iterations { get; set; }
    /// <summary>PBKDF2 salt of the passphrase.</summary>
    public byte[] Salt { get; set; } = new byte[LuksHeader.SaltLength];
    /// <summary>Start of the key material, in 512-byte sectors.</summary>
    public uint KeyOffsetSector { get; set; }
    /// <summary>Anti-forensic stripes (always 4000).</summary>
    public uint Stripes { get; set; } = LuksHeader.Stripes;
    /// <summary>True for a slot in use.</summary>
    public bool IsEnabled => Active == Enabled;
}

/// <summary>
/// The LUKS1 partition header (592 bytes, big-endian) as QEMU 7.2's crypto/block-luks.c reads
/// and writes it, with its checks (qcrypto_block_luks_check_header) and the parse of the cipher
/// mode string (qcrypto_block_luks_parse_header), each failure in QEMU's words. QEMU 7.2 has no
/// LUKS2: version 2 is refused as there.
/// </summary>
public sealed class LuksHeader
{
    /// <summary>Bytes of the header on disk.</summary>
    public const int Size = 592;
    /// <summary>Bytes of each salt.</summary>
    public const int SaltLength = 32;
    /// <summary>Bytes of the master key digest.</summary>
    public const int DigestLength = 20;
    /// <summary>Key slots in the header.</summary>
    public const int SlotCount = 8;
    /// <summary>The stripes of every slot.</summary>
    public const uint Stripes = 4000;
    /// <summary>Where the first key slot's material may start (4 KiB, cryptsetup's alignment).</summary>
    public const int KeySlotOffset = 4096;
    private const int HeaderSectors = KeySlotOffset / SectorCipher.SectorSize;
    private static readonly byte[] s_magic = [(byte)'L', (byte)'U', (byte)'K', (byte)'S', 0xBA, 0xBE];

    /// <summary>The format version (1).</summary>
    public ushort Version { get; set; } = 1;
    /// <summary>The cipher name ("aes", "twofish", "serpent", "cast5").</summary>
    public string CipherName { get; set; } = "";
    /// <summary>MODE-IVGEN[:HASH], e.g. xts-plain64.</summary>
    public string CipherModeSpec { get; set; } = "";
    /// <summary>The PBKDF2 and AF hash.</summary>
    public string HashSpec { get; set; } = "";
    /// <summary>Start of the encrypted payload, in sectors.</summary>
    public uint PayloadOffsetSector { get; set; }
    /// <summary>Bytes of the master key.</summary>
    public uint KeyBytes { get; set; }
    /// <summary>PBKDF2 of the master key, to check an unlocked key.</summary>
    public byte[] MasterKeyDigest { get; set; } = new byte[DigestLength];
    /// <summary>Salt of that digest.</summary>
    public byte[] MasterKeySalt { get; set; } = new byte[SaltLength];
    /// <summary>Iterations of that digest.</summary>
    public uint MasterKeyIterations { get; set; }
    /// <summary>The volume's UUID text.</summary>
    public string Uuid { get; set; } = "";
    /// <summary>The eight key slots.</summary>
    public LuksKeySlot[] Slots { get; } = Enumerable.Range(0, SlotCount).Select(_ => new LuksKeySlot()).ToArray();

    // What the cipher mode string and names stand for, set by Parse.
    /// <summary>The cipher of the name and key length.</summary>
    public CipherAlgorithm CipherAlgorithm { get; private set; }
    /// <summary>The mode of the mode string.</summary>
    public CipherMode CipherMode { get; private set; }
    /// <summary>The IV generator of the mode string.</summary>
    public IvGenAlgorithm IvGenAlgorithm { get; private set; }
    /// <summary>ESSIV's hash.</summary>
    public HashAlgorithm IvGenHash { get; private set; }
    /// <summary>ESSIV's cipher.</summary>
    public CipherAlgorithm IvGenCipher { get; private set; }
    /// <summary>The hash of the hash spec.</summary>
    public HashAlgorithm Hash { get; private set; }

    /// <summary>True when <paramref name="bytes"/> start with a LUKS1 header (qcrypto_block_luks_has_format, the probe).</summary>
    public static bool HasFormat(ReadOnlySpan<byte> bytes) =>
        bytes.Length >= 8 && bytes[..6].SequenceEqual(s_magic) && BinaryPrimitives.ReadUInt16BigEndian(bytes[6..]) == 1;

    /// <summary>Reads, checks and parses a header.</summary>
    /// <exception cref="LuksFormatException">QEMU's message for the first problem.</exception>
    public static LuksHeader Read(ReadOnlySpan<byte> b)
    {
        var h = new LuksHeader();
        bool magic = b[..6].SequenceEqual(s_magic);
        h.Version = BinaryPrimitives.ReadUInt16BigEndian(b[6..]);
        var cipherName = b.Slice(8, 32);
        var cipherMode = b.Slice(40, 32);
        var hashSpec = b.Slice(72, 32);
        h.PayloadOffsetSector = BinaryPrimitives.ReadUInt32BigEndian(b[104..]);
        h.KeyBytes = BinaryPrimitives.ReadUInt32BigEndian(b[108..]);
        h.MasterKeyDigest = b.Slice(112, DigestLength).ToArray();
        h.MasterKeySalt = b.Slice(132, SaltLength).ToArray();
        h.MasterKeyIterations = BinaryPrimitives.ReadUInt32BigEndian(b[164..]);
        h.Uuid = CString(b.Slice(168, 40));
        for (int i = 0; i < SlotCount; i++)
        {
            var s = b.Slice(208 + i * 48, 48);
            h.Slots[i].Active = BinaryPrimitives.ReadUInt32BigEndian(s);
            h.Slots[i].Iterations = BinaryPrimitives.ReadUInt32BigEndian(s[4..]);
            h.Slots[i].Salt = s.Slice(8, SaltLength).ToArray();
            h.Slots[i].KeyOffsetSector = BinaryPrimitives.ReadUInt32BigEndian(s[40..]);
            h.Slots[i].Stripes = BinaryPrimitives.ReadUInt32BigEndian(s[44..]);
        }

        if (!magic) throw new LuksFormatException("Volume is not in LUKS format");
        if (h.Version != 1) throw new LuksFormatException($"LUKS version {h.Version} is not supported");
        if (cipherName.IndexOf((byte)0) < 0) throw new LuksFormatException("LUKS header cipher name is not NUL terminated");
        if (cipherMode.IndexOf((byte)0) < 0) throw new LuksFormatException("LUKS header cipher mode is not NUL terminated");
        if (hashSpec.IndexOf((byte)0) < 0) throw new LuksFormatException("LUKS header hash spec is not NUL terminated");
        h.CipherName = CString(cipherName);
        h.CipherModeSpec = CString(cipherMode);
        h.HashSpec = CString(hashSpec);
        h.Check();
        h.Parse();
        return h;
    }

    private void Check()
    {
        if (PayloadOffsetSector < HeaderSectors) throw new LuksFormatException("LUKS payload is overlapping with the header");
        if (MasterKeyIterations == 0) throw new LuksFormatException("LUKS key iteration count is zero");
        for (int i = 0; i < SlotCount; i++)
        {
            var s1 = Slots[i];
            long start1 = s1.KeyOffsetSector, len1 = SplitKeySectors(s1.Stripes);
            if (s1.Stripes != Stripes) throw new LuksFormatException($"Keyslot {i} is corrupted (stripes {(int)s1.Stripes} != {Stripes})");
            if (s1.Active is not (LuksKeySlot.Enabled or LuksKeySlot.Disabled)) throw new LuksFormatException($"Keyslot {i} state (active/disable) is corrupted");
            if (s1.IsEnabled && s1.Iterations == 0) throw new LuksFormatException($"Keyslot {i} iteration count is zero");
            if (start1 < HeaderSectors) throw new LuksFormatException($"Keyslot {i} is overlapping with the LUKS header");
            if (start1 + len1 > PayloadOffsetSector) throw new LuksFormatException($"Keyslot {i} is overlapping with the encrypted payload");
            for (int j = i + 1; j < SlotCount; j++)
            {
                long start2 = Slots[j].KeyOffsetSector, len2 = SplitKeySectors(Slots[j].Stripes);
                if (start1 < start2 + len2 && start2 < start1 + len1 && len1 > 0 && len2 > 0)
                    throw new LuksFormatException($"Keyslots {i} and {j} are overlapping in the header");
            }
        }
    }

    /// <summary>The payload offset QEMU gives a new header for a master key of <paramref name="keyBytes"/> (qcrypto_block_calculate_payload_offset).</summary>
    public static long PayloadOffsetFor(int keyBytes)
    {
        var h = new LuksHeader { KeyBytes = (uint)keyBytes };
        return KeySlotOffset + h.SplitKeySectors(Stripes) * SlotCount * SectorCipher.SectorSize;
    }

    /// <summary>qcrypto_block_luks_splitkeylen_sectors: a slot's key material, rounded up to 4 KiB.</summary>
    public long SplitKeySectors(uint stripes)
    {
        long sectors = ((long)KeyBytes * stripes + SectorCipher.SectorSize - 1) / SectorCipher.SectorSize;
        return (sectors + HeaderSectors - 1) / HeaderSectors * HeaderSectors;
    }

    private void Parse()
    {
        int dash = CipherModeSpec.IndexOf('-');
        if (dash < 0) throw new LuksFormatException($"Unexpected cipher mode string format '{CipherModeSpec}'");
        string modeName = CipherModeSpec[..dash];
        string ivGenName = CipherModeSpec[(dash + 1)..];
        string? ivHashName = null;
        int colon = ivGenName.IndexOf(':');
        if (colon >= 0)
        {
            ivHashName = ivGenName[(colon + 1)..];
            ivGenName = ivGenName[..colon];
            IvGenHash = CryptoAlgorithms.ParseHash(ivHashName) ?? throw new LuksFormatException($"Hash algorithm '{ivHashName}' not supported");
        }
        CipherMode = CryptoAlgorithms.ParseMode(modeName) ?? throw new LuksFormatException($"Cipher mode '{modeName}' not supported");
        uint keyBytes = CipherMode == CipherMode.Xts ? KeyBytes / 2 : KeyBytes;
        CipherAlgorithm = CryptoAlgorithms.FromLuksName(CipherName, (int)keyBytes)
            ?? throw new LuksFormatException($"Algorithm '{CipherName}' with key size {keyBytes} bytes not supported");
        Hash = CryptoAlgorithms.ParseHash(HashSpec) ?? throw new LuksFormatException($"Hash algorithm '{HashSpec}' not supported");
        IvGenAlgorithm = CryptoAlgorithms.ParseIvGen(ivGenName) ?? throw new LuksFormatException($"IV generator '{ivGenName}' not supported");
        if (IvGenAlgorithm == IvGenAlgorithm.Essiv)
        {
            if (ivHashName is null) throw new LuksFormatException("Missing IV generator hash specification");
            IvGenCipher = SectorCipher.EssivCipher(CipherAlgorithm, IvGenHash);
        }
        else
        {
            IvGenCipher = CipherAlgorithm;
        }
    }

    /// <summary>Sets the cipher fields of a header being created.</summary>
    public void SetAlgorithms(CipherAlgorithm cipher, CipherMode mode, IvGenAlgorithm ivGen, HashAlgorithm? ivHash, HashAlgorithm hash)
    {
        CipherName = CryptoAlgorithms.LuksName(CryptoAlgorithms.Family(cipher));
        CipherModeSpec = $"{CryptoAlgorithms.Name(mode)}-{CryptoAlgorithms.Name(ivGen)}" + (ivHash is { } ih ? ":" + CryptoAlgorithms.Name(ih) : "");
        HashSpec = CryptoAlgorithms.Name(hash);
        KeyBytes = (uint)(CryptoAlgorithms.KeyLength(cipher) * (mode == CipherMode.Xts ? 2 : 1));
        Parse();
    }

    /// <summary>The 592 bytes on disk.</summary>
    public byte[] ToArray()
    {
        var b = new byte[Size];
        s_magic.CopyTo(b, 0);
        BinaryPrimitives.WriteUInt16BigEndian(b.AsSpan(6), Version);
        Encoding.ASCII.GetBytes(CipherName).CopyTo(b, 8);
        Encoding.ASCII.GetBytes(CipherModeSpec).CopyTo(b, 40);
        Encoding.ASCII.GetBytes(HashSpec).CopyTo(b, 72);
        BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(104), PayloadOffsetSector);
        BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(108), KeyBytes);
        MasterKeyDigest.CopyTo(b, 112);
        MasterKeySalt.CopyTo(b, 132);
        BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(164), MasterKeyIterations);
        Encoding.ASCII.GetBytes(Uuid).CopyTo(b, 168);
        for (int i = 0; i < SlotCount; i++)
        {
            var s = b.AsSpan(208 + i * 48, 48);
            BinaryPrimitives.WriteUInt32BigEndian(s, Slots[i].Active);
            BinaryPrimitives.WriteUInt32BigEndian(s[4..], Slots[i].Iterations);
            Slots[i].Salt.CopyTo(s[8..]);
            BinaryPrimitives.WriteUInt32BigEndian(s[40..], Slots[i].KeyOffsetSector);
            BinaryPrimitives.WriteUInt32BigEndian(s[44..], Slots[i].Stripes);
        }
        return b;
    }

    /// <summary>
    /// QCryptoBlockInfoLUKS, the members in QAPI order (qemu-img info's "encrypt" data and luks's
    /// format-specific data).
    /// </summary>
    public List<KeyValuePair<string, object>> InfoData()
    {
        var data = new List<KeyValuePair<string, object>>
        {
            new("cipher-alg", CryptoAlgorithms.Name(CipherAlgorithm)),
            new("cipher-mode", CryptoAlgorithms.Name(CipherMode)),
            new("ivgen-alg", CryptoAlgorithms.Name(IvGenAlgorithm)),
        };
        if (IvGenAlgorithm == IvGenAlgorithm.Essiv) data.Add(new("ivgen-hash-alg", CryptoAlgorithms.Name(IvGenHash)));
        data.Add(new("hash-alg", CryptoAlgorithms.Name(Hash)));
        data.Add(new("payload-offset", (long)PayloadOffsetSector * SectorCipher.SectorSize));
        data.Add(new("master-key-iters", (long)MasterKeyIterations));
        data.Add(new("uuid", Uuid));
        var slots = new List<Output.QemuJsonObject>();
        foreach (var s in Slots)
        {
            var o = new Output.QemuJsonObject().Add("active", s.IsEnabled);
            if (s.IsEnabled) o.Add("iters", (long)s.Iterations);
            if (s.IsEnabled) o.Add("stripes", (long)s.Stripes);
            o.Add("key-offset", (long)s.KeyOffsetSector * SectorCipher.SectorSize);
            slots.Add(o);
        }
        data.Add(new("slots", slots));
        return data;
    }

    private static string CString(ReadOnlySpan<byte> b)
    {
        int nul = b.IndexOf((byte)0);
        return Encoding.Latin1.GetString(nul < 0 ? b : b[..nul]);
    }
}

/// <summary>A LUKS header QEMU would refuse, with QEMU's message.</summary>
public sealed class LuksFormatException(string message) : IOException(message);
