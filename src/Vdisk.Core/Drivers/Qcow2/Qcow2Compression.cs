using System.IO.Compression;

namespace Vdisk.Drivers.Qcow2;

/// <summary>
/// Cluster compression as QEMU stores it: "zlib" is a raw deflate stream (no zlib header), zstd a
/// plain zstd frame. A compressed cluster always decompresses to exactly one cluster.
/// </summary>
public static class Qcow2Compression
{
    /// <summary>
    /// Decompresses <paramref name="input"/> (the sectors the L2 entry covers; trailing bytes are
    /// ignored) into exactly <c>output.Length</c> bytes. False when the data is malformed or short.
    /// </summary>
    public static bool TryDecompress(Qcow2CompressionType type, ReadOnlySpan<byte> input, Span<byte> output)
    {
        try
        {
            using var source = new UnmanagedInput(input.ToArray());
            using Stream decoder = type == Qcow2CompressionType.Zstd
                ? new ZstdSharp.DecompressionStream(source, leaveOpen: true)
                : new DeflateStream(source, CompressionMode.Decompress, leaveOpen: true);
            int done = decoder.ReadAtLeast(output, output.Length, throwOnEndOfStream: false);
            return done == output.Length;
        }
        catch (Exception e) when (e is InvalidDataException or IOException or ZstdSharp.ZstdException or ArgumentException)
        {
            return false;
        }
    }

    /// <summary>
    /// Compresses one cluster; null when the result would not be smaller than the cluster (QEMU
    /// then stores the cluster uncompressed).
    /// </summary>
    public static byte[]? Compress(Qcow2CompressionType type, ReadOnlySpan<byte> cluster)
    {
        if (type == Qcow2CompressionType.Zstd)
        {
            using var compressor = new ZstdSharp.Compressor(3);
            var z = compressor.Wrap(cluster).ToArray();
            return z.Length < cluster.Length ? z : null;
        }
        using var output = new MemoryStream(cluster.Length);
        using (var deflate = new DeflateStream(output, CompressionLevel.Optimal, leaveOpen: true))
        {
            deflate.Write(cluster);
        }
        return output.Length < cluster.Length ? output.ToArray() : null;
    }

    /// <summary>A read-only stream over a byte array (MemoryStream would do; named for intent).</summary>
    private sealed class UnmanagedInput(byte[] data) : MemoryStream(data, writable: false);
}
