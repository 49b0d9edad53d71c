using System.Buffers.Binary;
using System.Security.Cryptography;

namespace Vdisk.Crypto;

/// <summary>
/// LUKS's anti-forensic splitter (QEMU's crypto/afsplit.c): a key becomes <c>stripes</c> blocks,
/// all but the last random, the last the key XOR the diffusion of the others; merging undoes it.
/// </summary>
public static class AfSplit
{
    /// <summary>qcrypto_afsplit_encode.</summary>
    public static byte[] Split(HashAlgorithm hash, ReadOnlySpan<byte> key, int stripes)
    {
        int n = key.Length;
        var output = new byte[n * stripes];
        var block = new byte[n];
        RandomNumberGenerator.Fill(output.AsSpan(0, n * (stripes - 1)));
        for (int i = 0; i < stripes - 1; i++)
        {
            Xor(output.AsSpan(i * n, n), block, block);
            Diffuse(hash, block);
        }
        Xor(key, block, output.AsSpan((stripes - 1) * n, n));
        return output;
    }

    /// <summary>qcrypto_afsplit_decode.</summary>
    public static byte[] Merge(HashAlgorithm hash, ReadOnlySpan<byte> split, int keyLength, int stripes)
    {
        var block = new byte[keyLength];
        for (int i = 0; i < stripes - 1; i++)
        {
            Xor(split.Slice(i * keyLength, keyLength), block, block);
            Diffuse(hash, block);
        }
        var key = new byte[keyLength];
        Xor(split.Slice((stripes - 1) * keyLength, keyLength), block, key);
        return key;
    }

    private static void Xor(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b, Span<byte> output)
    {
        for (int i = 0; i < output.Length; i++) output[i] = (byte)(a[i] ^ b[i]);
    }

    /// <summary>qcrypto_afsplit_hash: each digest-sized piece replaced by hash(be32(index) || piece), truncated.</summary>
    private static void Diffuse(HashAlgorithm hash, Span<byte> block)
    {
        int digestLength = CryptoAlgorithms.DigestLength(hash);
        int pieces = (block.Length + digestLength - 1) / digestLength;
        var input = new byte[4 + digestLength];
        for (int i = 0; i < pieces; i++)
        {
            int start = i * digestLength;
            int len = Math.Min(digestLength, block.Length - start);
            BinaryPrimitives.WriteUInt32BigEndian(input, (uint)i);
            block.Slice(start, len).CopyTo(input.AsSpan(4));
            var digest = CryptoAlgorithms.Hash(hash, input.AsSpan(0, 4 + len));
            digest.AsSpan(0, len).CopyTo(block.Slice(start, len));
        }
    }
}
