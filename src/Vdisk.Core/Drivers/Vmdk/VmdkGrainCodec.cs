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
    /// Inflates into <paramref name="output"/> (one grain) and returns the decompressed length,
    /// or -1 where QEMU fails with EINVAL: an empty or oversized length, or data zlib's
    /// uncompress refuses (corrupt, cut short, or more than a grain).
    /// </summary>
    public static int Decompress(byte[] stored, int storedLength, bool hasMarker, Span<byte> output)
    {
        int start = 0;
        long length = output.Length;
        if (hasMarker)
        {
            if (storedLength < VmdkMarker.GrainHeaderSize) return -1;
            length = BinaryPrimitives.ReadUInt32LittleEndian(stored.AsSpan(8));
            start = VmdkMarker.GrainHeaderSize;
        }
        if (length == 0 || length > storedLength) return -1;
        return Inflate(stored, start, (int)Math.Min(length, storedLength - start), output);
    }

    /// <summary>
    /// uncompress() into <paramref name="output"/>: the length when the zlib stream in
    /// <paramref name="input"/> is complete and fits, else -1.
    /// </summary>
    public static int Inflate(byte[] input, int offset, int count, Span<byte> output)
    {
        try
        {
            using var source = new InputSlice(input, offset, count);
            using var z = new ZLibStream(source, CompressionMode.Decompress);
            int n = z.ReadAtLeast(output, output.Length, throwOnEndOfStream: false);
            // More than fits: uncompress returns Z_BUF_ERROR.
            Span<byte> probe = stackalloc byte[1];
            if (n == output.Length && z.Read(probe) > 0) return -1;
            // A complete stream ends (and has its Adler-32 checked) without asking for more
            // input; .NET ends a stream cut short quietly, where zlib says Z_BUF_ERROR.
            return source.Exhausted ? -1 : n;
        }
        catch (Exception e) when (e is InvalidDataException or IOException)
        {
            return -1;
        }
    }

    /// <summary>A read-only stream over part of an array that remembers whether a read found nothing left.</summary>
    private sealed class InputSlice(byte[] data, int offset, int count) : Stream
    {
        private int _position;

        /// <summary>True once the reader asked for bytes after the last one.</summary>
        public bool Exhausted { get; private set; }

        public override int Read(byte[] buffer, int index, int length) => Read(buffer.AsSpan(index, length));

        public override int Read(Span<byte> buffer)
        {
            int n = Math.Min(buffer.Length, count - _position);
            if (n <= 0)
            {
                if (buffer.Length > 0) Exhausted = true;
                return 0;
            }
            data.AsSpan(offset + _position, n).CopyTo(buffer);
            _position += n;
            return n;
        }

        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => count;
        public override long Position { get => _position; set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
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
