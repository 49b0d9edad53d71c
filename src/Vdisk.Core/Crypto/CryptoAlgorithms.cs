using System.Security.Cryptography;
using Vdisk.Options;

namespace Vdisk.Crypto;

/// <summary>QCryptoCipherAlgorithm values vdisk can run (QEMU 7.2 also has des and 3des, which its LUKS refuses).</summary>
public enum CipherAlgorithm
{
    /// <summary>aes-128.</summary>
    Aes128,
    /// <summary>aes-192.</summary>
    Aes192,
    /// <summary>aes-256.</summary>
    Aes256,
    /// <summary>cast5-128 (8-byte blocks).</summary>
    Cast5_128,
    /// <summary>serpent-128.</summary>
    Serpent128,
    /// <summary>serpent-192.</summary>
    Serpent192,
    /// <summary>serpent-256.</summary>
    Serpent256,
    /// <summary>twofish-128.</summary>
    Twofish128,
    /// <summary>twofish-192.</summary>
    Twofish192,
    /// <summary>twofish-256.</summary>
    Twofish256,
}

/// <summary>A cipher without its key length: the LUKS header's cipher name.</summary>
public enum CipherFamily
{
    /// <summary>aes.</summary>
    Aes,
    /// <summary>cast5.</summary>
    Cast5,
    /// <summary>serpent.</summary>
    Serpent,
    /// <summary>twofish.</summary>
    Twofish,
}

/// <summary>QCryptoCipherMode.</summary>
public enum CipherMode
{
    /// <summary>ecb (no IV).</summary>
    Ecb,
    /// <summary>cbc.</summary>
    Cbc,
    /// <summary>xts (IEEE 1619).</summary>
    Xts,
    /// <summary>ctr (refused by vdisk).</summary>
    Ctr,
}

/// <summary>QCryptoIVGenAlgorithm.</summary>
public enum IvGenAlgorithm
{
    /// <summary>The sector number's low 32 bits, little-endian.</summary>
    Plain,
    /// <summary>The sector number, 64 bits little-endian.</summary>
    Plain64,
    /// <summary>plain64 encrypted with the hash of the key.</summary>
    Essiv,
}

/// <summary>QCryptoHashAlgorithm.</summary>
public enum HashAlgorithm
{
    /// <summary>md5.</summary>
    Md5,
    /// <summary>sha1.</summary>
    Sha1,
    /// <summary>sha224 (not in .NET).</summary>
    Sha224,
    /// <summary>sha256.</summary>
    Sha256,
    /// <summary>sha384.</summary>
    Sha384,
    /// <summary>sha512.</summary>
    Sha512,
    /// <summary>ripemd160 (not in .NET).</summary>
    Ripemd160,
}

/// <summary>The QAPI names of the crypto enums, their sizes, and the primitives behind them.</summary>
public static class CryptoAlgorithms
{
    /// <summary>
    /// QCryptoCipherAlgorithm's names in QEMU 7.2 as Debian builds it (without sm4, which only
    /// exists with CONFIG_CRYPTO_SM4): the values its option visitor accepts.
    /// </summary>
    private static readonly string[] s_qemuCiphers =
        ["aes-128", "aes-192", "aes-256", "des", "3des", "cast5-128", "serpent-128", "serpent-192", "serpent-256", "twofish-128", "twofish-192", "twofish-256"];

    /// <summary>The QAPI name of a cipher.</summary>
    public static string Name(CipherAlgorithm a) => a switch
    {
        CipherAlgorithm.Aes128 => "aes-128", CipherAlgorithm.Aes192 => "aes-192", CipherAlgorithm.Aes256 => "aes-256",
        CipherAlgorithm.Cast5_128 => "cast5-128",
        CipherAlgorithm.Serpent128 => "serpent-128", CipherAlgorithm.Serpent192 => "serpent-192", CipherAlgorithm.Serpent256 => "serpent-256",
        CipherAlgorithm.Twofish128 => "twofish-128", CipherAlgorithm.Twofish192 => "twofish-192", _ => "twofish-256",
    };

    /// <summary>The family of a cipher.</summary>
    public static CipherFamily Family(CipherAlgorithm a) => a switch
    {
        CipherAlgorithm.Aes128 or CipherAlgorithm.Aes192 or CipherAlgorithm.Aes256 => CipherFamily.Aes,
        CipherAlgorithm.Cast5_128 => CipherFamily.Cast5,
        CipherAlgorithm.Serpent128 or CipherAlgorithm.Serpent192 or CipherAlgorithm.Serpent256 => CipherFamily.Serpent,
        _ => CipherFamily.Twofish,
    };

    /// <summary>The LUKS header's name of a family (qcrypto_block_luks_cipher_alg_lookup).</summary>
    public static string LuksName(CipherFamily f) => f switch
    {
        CipherFamily.Aes => "aes", CipherFamily.Cast5 => "cast5", CipherFamily.Serpent => "serpent", _ => "twofish",
    };

    /// <summary>
    /// qcrypto_block_luks_cipher_name_lookup: the cipher of a LUKS header's name and key length
    /// (16, 24 or 32 bytes; cast5 only 16), or null.
    /// </summary>
    public static CipherAlgorithm? FromLuksName(string name, int keyBytes)
    {
        CipherFamily? family = name switch
        {
            "aes" => CipherFamily.Aes, "cast5" => CipherFamily.Cast5, "serpent" => CipherFamily.Serpent, "twofish" => CipherFamily.Twofish, _ => null,
        };
        if (family is not { } f) return null;
        foreach (var a in Enum.GetValues<CipherAlgorithm>())
            if (Family(a) == f && KeyLength(a) == keyBytes) return a;
        return null;
    }

    /// <summary>Bytes per block of a cipher (qcrypto_cipher_get_block_len).</summary>
    public static int BlockLength(CipherAlgorithm a) => a == CipherAlgorithm.Cast5_128 ? 8 : 16;

    /// <summary>The QAPI name of a mode.</summary>
    public static string Name(CipherMode m) => m switch { CipherMode.Ecb => "ecb", CipherMode.Cbc => "cbc", CipherMode.Xts => "xts", _ => "ctr" };
    /// <summary>The QAPI name of an IV generator.</summary>
    public static string Name(IvGenAlgorithm a) => a switch { IvGenAlgorithm.Plain => "plain", IvGenAlgorithm.Plain64 => "plain64", _ => "essiv" };
    /// <summary>The QAPI name of a hash.</summary>
    public static string Name(HashAlgorithm h) => h switch
    {
        HashAlgorithm.Md5 => "md5", HashAlgorithm.Sha1 => "sha1", HashAlgorithm.Sha224 => "sha224", HashAlgorithm.Sha256 => "sha256",
        HashAlgorithm.Sha384 => "sha384", HashAlgorithm.Sha512 => "sha512", _ => "ripemd160",
    };

    /// <summary>The key length of a cipher, in bytes (qcrypto_cipher_get_key_len).</summary>
    public static int KeyLength(CipherAlgorithm a) => a switch
    {
        CipherAlgorithm.Aes128 or CipherAlgorithm.Cast5_128 or CipherAlgorithm.Serpent128 or CipherAlgorithm.Twofish128 => 16,
        CipherAlgorithm.Aes192 or CipherAlgorithm.Serpent192 or CipherAlgorithm.Twofish192 => 24,
        _ => 32,
    };

    /// <summary>The digest length of a hash, in bytes.</summary>
    public static int DigestLength(HashAlgorithm h) => h switch
    {
        HashAlgorithm.Md5 => 16, HashAlgorithm.Sha1 => 20, HashAlgorithm.Sha224 => 28, HashAlgorithm.Sha256 => 32,
        HashAlgorithm.Sha384 => 48, HashAlgorithm.Sha512 => 64, _ => 20,
    };

    /// <summary>A mode by QAPI name, or null.</summary>
    public static CipherMode? ParseMode(string s) => s switch { "ecb" => CipherMode.Ecb, "cbc" => CipherMode.Cbc, "xts" => CipherMode.Xts, "ctr" => CipherMode.Ctr, _ => null };
    /// <summary>An IV generator by QAPI name, or null.</summary>
    public static IvGenAlgorithm? ParseIvGen(string s) => s switch { "plain" => IvGenAlgorithm.Plain, "plain64" => IvGenAlgorithm.Plain64, "essiv" => IvGenAlgorithm.Essiv, _ => null };
    /// <summary>A hash by QAPI name, or null.</summary>
    public static HashAlgorithm? ParseHash(string s) => s switch
    {
        "md5" => HashAlgorithm.Md5, "sha1" => HashAlgorithm.Sha1, "sha224" => HashAlgorithm.Sha224, "sha256" => HashAlgorithm.Sha256,
        "sha384" => HashAlgorithm.Sha384, "sha512" => HashAlgorithm.Sha512, "ripemd160" => HashAlgorithm.Ripemd160, _ => null,
    };

    /// <summary>
    /// A create option's cipher name: QEMU's enum refusal for names it does not know; null for
    /// des and 3des, which the enum has but LUKS refuses later (see <see cref="UnsupportedCipher"/>).
    /// </summary>
    /// <exception cref="OptionException">Not a QEMU cipher name.</exception>
    public static CipherAlgorithm? ParseCipherOption(string key, string s)
    {
        foreach (var a in Enum.GetValues<CipherAlgorithm>())
            if (Name(a) == s) return a;
        if (s_qemuCiphers.Contains(s)) return null;
        throw new OptionException($"Parameter '{key}' does not accept value '{s}'");
    }

    /// <summary>qcrypto_block_luks_cipher_alg_lookup's refusal of a QEMU cipher LUKS has no name for.</summary>
    public static OptionException UnsupportedCipher(string name) => new($"Algorithm '{name}' not supported");

    /// <summary>.NET's name of a hash, or an error for those it lacks.</summary>
    private static HashAlgorithmName DotNetHash(HashAlgorithm h) => h switch
    {
        HashAlgorithm.Md5 => HashAlgorithmName.MD5,
        HashAlgorithm.Sha1 => HashAlgorithmName.SHA1,
        HashAlgorithm.Sha256 => HashAlgorithmName.SHA256,
        HashAlgorithm.Sha384 => HashAlgorithmName.SHA384,
        HashAlgorithm.Sha512 => HashAlgorithmName.SHA512,
        _ => throw Unsupported(h),
    };

    /// <summary>The refusal of a hash QEMU has but .NET does not.</summary>
    public static Exception Unsupported(HashAlgorithm h) => new OptionException($"vdisk does not support the hash algorithm '{Name(h)}'");

    /// <summary>Checks that vdisk can compute <paramref name="h"/> (for PBKDF2 as well as digests).</summary>
    /// <exception cref="OptionException">Not supported.</exception>
    public static void EnsureSupported(HashAlgorithm h, bool forPbkdf2)
    {
        DotNetHash(h);
        if (forPbkdf2 && h == HashAlgorithm.Md5) throw Unsupported(h);
    }

    /// <summary>The digest of <paramref name="data"/>.</summary>
    public static byte[] Hash(HashAlgorithm h, ReadOnlySpan<byte> data) => h switch
    {
        HashAlgorithm.Md5 => MD5.HashData(data),
        HashAlgorithm.Sha1 => SHA1.HashData(data),
        HashAlgorithm.Sha256 => SHA256.HashData(data),
        HashAlgorithm.Sha384 => SHA384.HashData(data),
        HashAlgorithm.Sha512 => SHA512.HashData(data),
        _ => throw Unsupported(h),
    };

    /// <summary>qcrypto_pbkdf2.</summary>
    public static byte[] Pbkdf2(HashAlgorithm h, ReadOnlySpan<byte> password, ReadOnlySpan<byte> salt, int iterations, int length)
    {
        EnsureSupported(h, forPbkdf2: true);
        return Rfc2898DeriveBytes.Pbkdf2(password, salt, iterations, DotNetHash(h), length);
    }

    /// <summary>
    /// qcrypto_pbkdf2_count_iters: how many PBKDF2 iterations of <paramref name="h"/> one second
    /// allows here, measured by growing a run until it takes more than half a second.
    /// </summary>
    public static ulong Pbkdf2IterationsPerSecond(HashAlgorithm h, ReadOnlySpan<byte> password, ReadOnlySpan<byte> salt, int length)
    {
        ulong iterations = 1 << 15;
        while (true)
        {
            long start = System.Diagnostics.Stopwatch.GetTimestamp();
            Pbkdf2(h, password, salt, (int)Math.Min(iterations, int.MaxValue), length);
            double ms = System.Diagnostics.Stopwatch.GetElapsedTime(start).TotalMilliseconds;
            if (ms > 500 || iterations >= int.MaxValue) return (ulong)(iterations * 1000.0 / Math.Max(ms, 1));
            iterations = ms < 100 ? iterations * 10 : (ulong)(iterations * 1000.0 / ms);
        }
    }
}
