using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Vdisk.Crypto;

/// <summary>Buffer arithmetic the batched modes (XTS, CBC decryption) share.</summary>
internal static class CipherBuffers
{
    /// <summary><paramref name="data"/> ^= <paramref name="with"/> (as long as <paramref name="data"/>), 16 bytes at a time.</summary>
    public static void Xor(Span<byte> data, ReadOnlySpan<byte> with)
    {
        with = with[..data.Length];
        var d = MemoryMarshal.Cast<byte, Vector128<byte>>(data);
        var w = MemoryMarshal.Cast<byte, Vector128<byte>>(with);
        for (int i = 0; i < d.Length; i++) d[i] ^= w[i];
        for (int i = d.Length * 16; i < data.Length; i++) data[i] ^= with[i];
    }
}
