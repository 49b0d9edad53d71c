using CsCheck;
using Vdisk.Crypto;
using Xunit;

namespace Vdisk.Tests.Crypto;

/// <summary>
/// Known answers of the block ciphers and modes: IEEE 1619 (XTS-AES) as QEMU's
/// tests/unit/test-crypto-xts.c uses them, the ciphers' own published vectors, and nettle's
/// serpent CBC vector.
/// </summary>
public class CipherTests
{
    public static TheoryData<string, string, ulong, string, string> Vectors() => new()
    {
        { "00000000000000000000000000000000", "00000000000000000000000000000000", 0UL,
          "0000000000000000000000000000000000000000000000000000000000000000",
          "917cf69ebd68b2ec9b9fe9a3eadda692cd43d2f59598ed858c02c2652fbf922e" },
        { "11111111111111111111111111111111", "22222222222222222222222222222222", 0x3333333333UL,
          "4444444444444444444444444444444444444444444444444444444444444444",
          "c454185e6a16936e39334038acef838bfb186fff7480adc4289382ecd6d394f0" },
        { "fffefdfcfbfaf9f8f7f6f5f4f3f2f1f0", "bfbebdbcbbbab9b8b7b6b5b4b3b2b1b0", 0x123456789aUL,
          "4444444444444444444444444444444444444444444444444444444444444444",
          "b01f86f8edc1863706fa8a4253e34f28af319de38334870f4dd1f94cbe9832f1" },
        // Vectors 7, 15 and 21: a tail shorter than a block (ciphertext stealing).
        { "fffefdfcfbfaf9f8f7f6f5f4f3f2f1f0", "bfbebdbcbbbab9b8b7b6b5b4b3b2b1b0", 0x123456789aUL,
          "000102030405060708090a0b0c0d0e0f10", "6c1625db4671522d3d7599601de7ca09ed" },
        { "fffefdfcfbfaf9f8f7f6f5f4f3f2f1f0", "bfbebdbcbbbab9b8b7b6b5b4b3b2b1b0", 0x123456789aUL,
          "000102030405060708090a0b0c0d0e0f101112131415161718", "8f4dcbad55558d7b4e01d9379cd4ea22edbf9dace45d6f6a73" },
        { "fffefdfcfbfaf9f8f7f6f5f4f3f2f1f0", "bfbebdbcbbbab9b8b7b6b5b4b3b2b1b0", 0x123456789aUL,
          "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e", "d05bc090a8e04f1b3d3ecdd5baec0fd4edbf9dace45d6f6a7306e64be5dd82" },
    };

    [Theory]
    [MemberData(nameof(Vectors))]
    public void EncryptsAndDecryptsTheStandardsVectors(string key1, string key2, ulong sequence, string plain, string cipher)
    {
        using var xts = new XtsCipher(CipherAlgorithm.Aes128, Convert.FromHexString(key1 + key2));
        var iv = new byte[16];
        System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(iv, sequence);
        var data = Convert.FromHexString(plain);
        xts.Encrypt(iv, data);
        Assert.Equal(cipher, Convert.ToHexStringLower(data));
        xts.Decrypt(iv, data);
        Assert.Equal(plain, Convert.ToHexStringLower(data));
    }

    [Fact]
    public void Vector4_AFullSectorOfCountingBytes()
    {
        using var xts = new XtsCipher(CipherAlgorithm.Aes128, Convert.FromHexString("2718281828459045235360287471352631415926535897932384626433832795"));
        var data = new byte[512];
        for (int i = 0; i < 512; i++) data[i] = (byte)i;
        xts.Encrypt(new byte[16], data);
        Assert.Equal("27a7479befa1d476489f308cd4cfa6e2a96e4bbe3208ff25287dd3819616e89c", Convert.ToHexStringLower(data.AsSpan(0, 32)));
        Assert.Equal("0a282df920147beabe421ee5319d0568", Convert.ToHexStringLower(data.AsSpan(496, 16)));
    }

    // Twofish: the paper's (Schneier et al., "Twofish: A 128-Bit Block Cipher", test vectors).
    // Serpent: NESSIE's verified vectors (Serpent-{128,192,256}-128, set 1 vector 0 and set 3 vector 1).
    // CAST5: RFC 2144 appendix B.1.
    public static TheoryData<CipherAlgorithm, string, string, string> BlockVectors() => new()
    {
        { CipherAlgorithm.Twofish128, "00000000000000000000000000000000", "00000000000000000000000000000000", "9f589f5cf6122c32b6bfec2f2ae8c35a" },
        { CipherAlgorithm.Twofish192, "0123456789abcdeffedcba98765432100011223344556677", "00000000000000000000000000000000", "cfd1d2e5a9be9cdf501f13b892bd2248" },
        { CipherAlgorithm.Twofish256, "0123456789abcdeffedcba987654321000112233445566778899aabbccddeeff", "00000000000000000000000000000000", "37527be0052334b89f0cfccae87cfa20" },
        { CipherAlgorithm.Serpent128, "80000000000000000000000000000000", "00000000000000000000000000000000", "264e5481eff42a4606abda06c0bfda3d" },
        { CipherAlgorithm.Serpent192, "800000000000000000000000000000000000000000000000", "00000000000000000000000000000000", "9e274ead9b737bb21efcfca548602689" },
        { CipherAlgorithm.Serpent256, "0101010101010101010101010101010101010101010101010101010101010101", "01010101010101010101010101010101", "ec9723b15b2a6489f84c4524fffc2748" },
        { CipherAlgorithm.Cast5_128, "0123456712345678234567893456789a", "0123456789abcdef", "238b4fe5847e44b2" },
        { CipherAlgorithm.Aes128, "000102030405060708090a0b0c0d0e0f", "00112233445566778899aabbccddeeff", "69c4e0d86a7b0430d8cdb78070b4c55a" },
    };

    [Theory]
    [MemberData(nameof(BlockVectors))]
    public void BlockCipher_EncryptsAndDecryptsThePublishedVectors(CipherAlgorithm algorithm, string key, string plain, string cipher)
    {
        using var c = BlockCipher.Create(algorithm, Convert.FromHexString(key));
        Assert.Equal(CryptoAlgorithms.BlockLength(algorithm), c.BlockSize);
        var data = Convert.FromHexString(plain);
        c.EncryptEcb(data, data);
        Assert.Equal(cipher, Convert.ToHexStringLower(data));
        c.DecryptEcb(data, data);
        Assert.Equal(plain, Convert.ToHexStringLower(data));
    }

    [Fact]
    public void BlockCipher_SerpentCbc_NettlesVector()
    {
        using var c = BlockCipher.Create(CipherAlgorithm.Serpent256, Convert.FromHexString("0123456789abcdeffedcba987654321000112233445566778899aabbccddeeff"));
        var iv = Convert.FromHexString("00112233445566778899aabbccddeeff");
        const string plain = "0000000000000000000000000000000011111111111111111111111111111111";
        var data = Convert.FromHexString(plain);
        c.EncryptCbc(data, iv);
        Assert.Equal("c170ed586cfda8fe084f01ef04475883b9eb25819813023f2938e97bdf4597c8", Convert.ToHexStringLower(data));
        c.DecryptCbc(data, iv);
        Assert.Equal(plain, Convert.ToHexStringLower(data));
    }

    [Fact]
    public void BlockCipher_DecryptCbcUnits_Sp800_38aVector_EachUnitFromItsOwnIv()
    {
        // NIST SP 800-38A F.2.2 (CBC-AES128.Decrypt) twice in one call: the second unit with an
        // all-zero IV, so only its first block differs (the plaintext XOR the standard's IV).
        using var c = BlockCipher.Create(CipherAlgorithm.Aes128, Convert.FromHexString("2b7e151628aed2a6abf7158809cf4f3c"));
        const string iv = "000102030405060708090a0b0c0d0e0f";
        const string cipher = "7649abac8119b246cee98e9b12e9197d5086cb9b507219ee95db113a917678b2" +
                              "73bed6b8e3c1743b7116e69e222295163ff1caa1681fac09120eca307586e1a7";
        const string plainTail = "ae2d8a571e03ac9c9eb76fac45af8e5130c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710";
        var data = Convert.FromHexString(cipher + cipher);
        c.DecryptCbcUnits(Convert.FromHexString(iv + "00000000000000000000000000000000"), data);
        Assert.Equal("6bc1bee22e409f96e93d7e117393172a" + plainTail + "6bc0bce12a459991e134741a7f9e1925" + plainTail, Convert.ToHexStringLower(data));
    }

    [Fact]
    public void BlockCipher_AesCtr_Sp800_38aVector()
    {
        // NIST SP 800-38A F.5.1 (CTR-AES128.Encrypt), two blocks: the counter is one big-endian number.
        using var c = BlockCipher.Create(CipherAlgorithm.Aes128, Convert.FromHexString("2b7e151628aed2a6abf7158809cf4f3c"));
        var iv = Convert.FromHexString("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff");
        const string plain = "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51";
        var data = Convert.FromHexString(plain);
        c.TransformCtr(data, iv);
        Assert.Equal("874d6191b620e3261bef6864990db6ce9806f66b7970fdff8617187bb9fffdff", Convert.ToHexStringLower(data));
        c.TransformCtr(data, iv);
        Assert.Equal(plain, Convert.ToHexStringLower(data));
    }

    [Theory]
    [InlineData(CipherAlgorithm.Twofish256)]
    [InlineData(CipherAlgorithm.Serpent128)]
    [InlineData(CipherAlgorithm.Cast5_128)]
    public void SectorCipher_EachModeRoundTripsAndDiffersPerSector(CipherAlgorithm algorithm)
    {
        var modes = CryptoAlgorithms.BlockLength(algorithm) == 16
            ? new[] { CipherMode.Xts, CipherMode.Cbc, CipherMode.Ctr, CipherMode.Ecb }
            : new[] { CipherMode.Cbc, CipherMode.Ctr, CipherMode.Ecb };
        foreach (var mode in modes)
        {
            var key = new byte[CryptoAlgorithms.KeyLength(algorithm) * (mode == CipherMode.Xts ? 2 : 1)];
            for (int i = 0; i < key.Length; i++) key[i] = (byte)(i * 7 + 1);
            using var sc = new SectorCipher(algorithm, mode, IvGenAlgorithm.Plain64, algorithm, HashAlgorithm.Sha256, key);
            var data = new byte[1024];
            sc.Encrypt(512, data);
            // Two equal sectors encrypt differently unless there is no IV.
            Assert.Equal(mode == CipherMode.Ecb, data.AsSpan(0, 512).SequenceEqual(data.AsSpan(512)));
            sc.Decrypt(512, data);
            Assert.All(data, b => Assert.Equal(0, b));
        }
    }

    [Theory]
    [InlineData(CipherAlgorithm.Serpent256)]
    [InlineData(CipherAlgorithm.Twofish256)]
    [InlineData(CipherAlgorithm.Cast5_128)]
    public void SectorCipher_SharedAcrossThreads_GivesTheSequentialResult(CipherAlgorithm algorithm)
    {
        // Requests in flight decrypt through one cipher at once; BouncyCastle's engines keep state in fields.
        var key = new byte[CryptoAlgorithms.KeyLength(algorithm)];
        for (int i = 0; i < key.Length; i++) key[i] = (byte)(i + 3);
        using var sc = new SectorCipher(algorithm, CipherMode.Cbc, IvGenAlgorithm.Plain64, algorithm, HashAlgorithm.Sha256, key);
        const int sectors = 2048;
        var expected = new byte[sectors * 512];
        for (int i = 0; i < expected.Length; i++) expected[i] = (byte)(i * 31 + (i >> 9));
        var parallel = expected.ToArray();
        sc.Decrypt(0, expected);
        Parallel.For(0, sectors, new ParallelOptions { MaxDegreeOfParallelism = 4 }, i => sc.Decrypt(i * 512L, parallel.AsSpan(i * 512, 512)));
        Assert.True(expected.AsSpan().SequenceEqual(parallel));
    }

    /// <summary>
    /// A buffer of many sectors against the same cipher one sector at a time, each with the IV of
    /// its own sector (the sector number carried across the buffer).
    /// </summary>
    [Theory]
    [InlineData(CipherMode.Xts, IvGenAlgorithm.Plain64)]
    [InlineData(CipherMode.Xts, IvGenAlgorithm.Plain)]
    [InlineData(CipherMode.Xts, IvGenAlgorithm.Essiv)]
    [InlineData(CipherMode.Cbc, IvGenAlgorithm.Essiv)]
    [InlineData(CipherMode.Cbc, IvGenAlgorithm.Plain64)]
    [InlineData(CipherMode.Ecb, IvGenAlgorithm.Plain64)]
    public void SectorCipher_ABufferOfSectors_IsEachSectorWithItsOwnIv(CipherMode mode, IvGenAlgorithm ivGen)
    {
        Gen.Select(Gen.Byte.Array[mode == CipherMode.Xts ? 64 : 32], Gen.Int[1, 300], Gen.Long[0, 1L << 40]).Sample((key, sectors, firstSector) =>
        {
            const int sector = SectorCipher.SectorSize;
            using var cipher = new SectorCipher(CipherAlgorithm.Aes256, mode, ivGen, CipherAlgorithm.Aes256, HashAlgorithm.Sha256, key);
            var plain = new byte[sectors * sector];
            for (int i = 0; i < plain.Length; i++) plain[i] = (byte)(i * 13 + key[i % key.Length]);
            var each = (byte[])plain.Clone();
            for (int i = 0; i < sectors; i++) cipher.Encrypt((firstSector + i) * sector, each.AsSpan(i * sector, sector));
            var all = (byte[])plain.Clone();
            cipher.Encrypt(firstSector * sector, all);
            Assert.Equal(each, all);
            cipher.Decrypt(firstSector * sector, all);
            Assert.Equal(plain, all);
        });
    }

    [Fact]
    public void SectorCipher_RefusesXtsOfAnEightByteBlockCipher_InQemusWords()
    {
        var e = Assert.Throws<Vdisk.Options.OptionException>(() =>
            new SectorCipher(CipherAlgorithm.Cast5_128, CipherMode.Xts, IvGenAlgorithm.Plain64, CipherAlgorithm.Cast5_128, HashAlgorithm.Sha256, new byte[32]));
        Assert.Equal("Unsupported cipher mode xts", e.Message);
    }

    [Theory]
    [InlineData(CipherAlgorithm.Twofish128, HashAlgorithm.Sha256, "twofish-256")]
    [InlineData(CipherAlgorithm.Serpent256, HashAlgorithm.Md5, "serpent-128")]
    [InlineData(CipherAlgorithm.Aes128, HashAlgorithm.Sha256, "aes-256")]
    [InlineData(CipherAlgorithm.Serpent128, HashAlgorithm.Sha1, "No Serpent cipher with key size 20 available")]
    [InlineData(CipherAlgorithm.Twofish128, HashAlgorithm.Sha512, "No Twofish cipher with key size 64 available")]
    [InlineData(CipherAlgorithm.Cast5_128, HashAlgorithm.Sha256, "Cipher cast5-128 not supported with essiv")]
    public void EssivCipher_SameFamilyByDigestLength_OrQemusRefusal(CipherAlgorithm cipher, HashAlgorithm hash, string expected)
    {
        string got;
        try { got = CryptoAlgorithms.Name(SectorCipher.EssivCipher(cipher, hash)); }
        catch (Vdisk.Options.OptionException e) { got = e.Message; }
        Assert.Equal(expected, got);
    }

    [Fact]
    public void AfSplit_MergesWhatItSplit()
    {
        var key = Convert.FromHexString("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f2021222324252627");
        foreach (var hash in new[] { HashAlgorithm.Sha1, HashAlgorithm.Sha256, HashAlgorithm.Sha512 })
        {
            var split = AfSplit.Split(hash, key, 4000);
            Assert.Equal(key.Length * 4000, split.Length);
            Assert.Equal(key, AfSplit.Merge(hash, split, key.Length, 4000));
        }
    }
}
