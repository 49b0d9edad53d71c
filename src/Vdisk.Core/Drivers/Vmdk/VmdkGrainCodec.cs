using System.Buffers.Binary;
using System.IO.Compression;

namespace Vdisk.Drivers.Vmdk;

/// <summary>
/// Compressed grains of stream-optimized extents: zlib streams (RFC 1950, as zlib's compress()
/// writes them), each after a 12-byte grain marker (guest sector, compressed size).
/// </summary>
public static class VmdkGrainCodec
{
    /// <summary>
    /// QEMU's vmdk_read_extent for a compressed grain: <paramref name="stored"/> holds the bytes
    /// from the grain's offset (two grains' worth, zero-padded past the end of the file).
    /// Returns the decompressed grain (at most <paramref name="grainBytes"/>), or null where QEMU
    /// fails with EINVAL: an empty or oversized length, or data zlib's uncompress refuses.
    /// </summary>
    public static byte[]? Decompress(ReadOnlySpan<byte> stored, int grainBytes, bool hasMarker)
    {
        ReadOnlySpan<byte> data = stored;
        long length = grainBytes;
        if (hasMarker)
        {
            if (stored.Length < VmdkMarker.GrainHeaderSize) return null;
            length = BinaryPrimitives.ReadUInt32LittleEndian(stored[8..]);
            data = stored[VmdkMarker.GrainHeaderSize..];
        }
        if (length == 0 || length > stored.Length) return null;
        data = data[..(int)Math.Min(length, data.Length)];
        return Inflate(data, grainBytes);
    }

    /// <summary>
    /// uncompress() into a buffer of <paramref name="capacity"/> bytes: the output when the zlib
    /// stream is complete and fits, else null.
    /// </summary>
    public static byte[]? Inflate(ReadOnlySpan<byte> data, int capacity)
    {
        try
        {
            using var input = new MemoryStream(data.ToArray(), writable: false);
            using var z = new ZLibStream(input, CompressionMode.Decompress);
            var output = new byte[capacity + 1];
            int n = z.ReadAtLeast(output, output.Length, throwOnEndOfStream: false);
            // More than fits: uncompress returns Z_BUF_ERROR.
            if (n > capacity) return null;
            // A stream cut short ends without error in .NET; zlib says Z_BUF_ERROR. The last
            // four bytes of a complete stream are its Adler-32, which .NET checks only when it
            // reached the end: so a short stream is one whose checksum we never consumed.
            if (!EndsWithAdler(data, output.AsSpan(0, n))) return null;
            Array.Resize(ref output, n);
            return output;
        }
        catch (Exception e) when (e is InvalidDataException or IOException)
        {
            return null;
        }
    }

    /// <summary>True when the zlib stream's trailer is the Adler-32 of <paramref name="output"/> and the stream has a valid header.</summary>
    private static bool EndsWithAdler(ReadOnlySpan<byte> data, ReadOnlySpan<byte> output)
    {
        if (data.Length < 6) return false;
        uint a = 1, b = 0;
        foreach (byte x in output)
        {
            a = (a + x) % 65521;
            b = (b + a) % 65521;
        }
        uint adler = (b << 16) | a;
        // The checksum sits right after the deflate data; trailing bytes after it are allowed
        // (QEMU passes the marker's size), so look for it where the stream could end.
        for (int end = data.Length; end >= 6; end--)
            if (BinaryPrimitives.ReadUInt32BigEndian(data[(end - 4)..]) == adler) return true;
        return false;
    }

    /// <summary>compress(): a zlib stream at the default level.</summary>
    public static byte[] Deflate(ReadOnlySpan<byte> grain)
    {
        using var output = new MemoryStream(grain.Length / 2 + 64);
        using (var z = new ZLibStream(output, CompressionLevel.Optimal, leaveOpen: true))
        {
            z.Write(grain);
        }
        return output.ToArray();
    }

    /// <summary>A grain marker for guest sector <paramref name="lba"/> followed by <paramref name="compressed"/>.</summary>
    public static byte[] WithMarker(long lba, ReadOnlySpan<byte> compressed, int minimumLength)
    {
        var buffer = new byte[Math.Max(minimumLength, VmdkMarker.GrainHeaderSize + compressed.Length)];
        BinaryPrimitives.WriteUInt64LittleEndian(buffer, (ulong)lba);
        BinaryPrimitives.WriteUInt32LittleEndian(buffer.AsSpan(8), (uint)compressed.Length);
        compressed.CopyTo(buffer.AsSpan(VmdkMarker.GrainHeaderSize));
        return buffer;
    }
}
