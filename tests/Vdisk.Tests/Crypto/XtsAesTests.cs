using System.Buffers.Binary;
using CsCheck;
using Vdisk.Crypto;
using Xunit;

namespace Vdisk.Tests.Crypto;

/// <summary>IEEE 1619 (XTS-AES) test vectors, as QEMU's tests/unit/test-crypto-xts.c uses them.</summary>
public class XtsAesTests
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
        using var xts = new XtsAes(Convert.FromHexString(key1 + key2));
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
        using var xts = new XtsAes(Convert.FromHexString("2718281828459045235360287471352631415926535897932384626433832795"));
        var data = new byte[512];
        for (int i = 0; i < 512; i++) data[i] = (byte)i;
        xts.Encrypt(new byte[16], data);
        Assert.Equal("27a7479befa1d476489f308cd4cfa6e2a96e4bbe3208ff25287dd3819616e89c", Convert.ToHexStringLower(data.AsSpan(0, 32)));
        Assert.Equal("0a282df920147beabe421ee5319d0568", Convert.ToHexStringLower(data.AsSpan(496, 16)));
    }

    /// <summary>The batched path (all tweaks, one XOR, one cipher call) against the per-block one the vectors check.</summary>
    [Fact]
    public void ManyUnitsAtOnce_AreEachUnitOnItsOwn()
    {
        Gen.Select(Gen.Byte.Array[64], Gen.Int[1, 40], Gen.Int[1, 4], Gen.ULong).Sample((key, units, blocks32, firstSector) =>
        {
            int unitSize = blocks32 * 32 * 16 / 4;
            var plain = new byte[units * unitSize];
            for (int i = 0; i < plain.Length; i++) plain[i] = (byte)(i * 7 + key[i % 64]);
            var ivs = new byte[units * 16];
            for (int u = 0; u < units; u++) BinaryPrimitives.WriteUInt64LittleEndian(ivs.AsSpan(u * 16), firstSector + (ulong)u);
            using var xts = new XtsAes(key);
            var one = (byte[])plain.Clone();
            for (int u = 0; u < units; u++) xts.Encrypt(ivs.AsSpan(u * 16, 16), one.AsSpan(u * unitSize, unitSize));
            var many = (byte[])plain.Clone();
            xts.EncryptUnits(ivs, many, unitSize);
            Assert.Equal(one, many);
            xts.DecryptUnits(ivs, many, unitSize);
            Assert.Equal(plain, many);
        });
    }

    /// <summary>
    /// A sector cipher over a buffer of many sectors (batched) against the same cipher one sector
    /// at a time (each call a batch of one, with the IV of its own sector).
    /// </summary>
    [Theory]
    [InlineData(CipherMode.Xts, IvGenAlgorithm.Plain64)]
    [InlineData(CipherMode.Xts, IvGenAlgorithm.Plain)]
    [InlineData(CipherMode.Xts, IvGenAlgorithm.Essiv)]
    [InlineData(CipherMode.Cbc, IvGenAlgorithm.Essiv)]
    [InlineData(CipherMode.Cbc, IvGenAlgorithm.Plain64)]
    [InlineData(CipherMode.Ecb, IvGenAlgorithm.Plain64)]
    public void ABufferOfSectors_IsEachSectorWithItsOwnIv(CipherMode mode, IvGenAlgorithm ivGen)
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
