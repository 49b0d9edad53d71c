namespace Vdisk.Graph;

/// <summary>
/// A dirty bitmap (QEMU's BdrvDirtyBitmap): one bit per granule of a disk, set when the granule
/// is written while the bitmap is enabled. The bits are kept in chunks of
/// <see cref="ChunkBytes"/> bytes and a chunk with no bit set is not stored, so a bitmap of a huge,
/// mostly clean disk costs little memory. Bit i of the bitmap is bit i % 8 of byte i / 8 (the
/// little-endian order qcow2 stores). Thread-safe: concurrent writes set bits while an NBD
/// client reads them.
/// </summary>
public sealed class DirtyBitmap
{
    private readonly Dictionary<long, byte[]> _chunks = new();
    private readonly Lock _sync = new();

    /// <summary>A clean bitmap of <paramref name="diskLength"/> bytes of disk.</summary>
    /// <param name="name">The bitmap's name.</param>
    /// <param name="diskLength">Bytes of disk the bitmap covers.</param>
    /// <param name="granularityBits">log2 of the bytes one bit covers.</param>
    /// <param name="chunkBytes">Bytes of bitmap per stored chunk (qcow2 uses its cluster size).</param>
    public DirtyBitmap(string name, int granularityBits, long diskLength, int chunkBytes)
    {
        if (granularityBits is < 0 or > 62) throw new ArgumentOutOfRangeException(nameof(granularityBits));
        if (chunkBytes <= 0) throw new ArgumentOutOfRangeException(nameof(chunkBytes));
        Name = name;
        GranularityBits = granularityBits;
        DiskLength = diskLength;
        ChunkBytes = chunkBytes;
    }

    /// <summary>The bitmap's name.</summary>
    public string Name { get; }

    /// <summary>log2 of <see cref="Granularity"/>.</summary>
    public int GranularityBits { get; }

    /// <summary>Bytes of disk one bit covers.</summary>
    public long Granularity => 1L << GranularityBits;

    /// <summary>Bytes of disk the bitmap covers.</summary>
    public long DiskLength { get; }

    /// <summary>Bytes of bitmap per stored chunk.</summary>
    public int ChunkBytes { get; }

    /// <summary>Whether writes set bits (qcow2's "auto" flag for a persistent bitmap).</summary>
    public bool Enabled { get; set; } = true;

    /// <summary>Whether the bitmap is kept in the image when it closes.</summary>
    public bool Persistent { get; set; }

    /// <summary>
    /// Stored in use by a writer that did not close the image: its bits cannot be trusted, so it
    /// can only be removed (QEMU's inconsistent bitmap).
    /// </summary>
    public bool Inconsistent { get; set; }

    /// <summary>Number of bits: granules of the disk, the last one partial.</summary>
    public long BitCount => CeilDiv(DiskLength, Granularity);

    /// <summary>Bytes the bits take (get_bitmap_bytes_needed).</summary>
    public long ByteCount => CeilDiv(BitCount, 8);

    /// <summary>Number of chunks the bits take.</summary>
    public long ChunkCount => CeilDiv(ByteCount, ChunkBytes);

    private static long CeilDiv(long a, long b) => (a + b - 1) / b;

    /// <summary>The chunk's bytes, or null when no bit in it is set.</summary>
    public byte[]? GetChunk(long index)
    {
        lock (_sync) return _chunks.GetValueOrDefault(index)?.ToArray();
    }

    /// <summary>Replaces a chunk's bytes (an all-zero chunk is dropped).</summary>
    public void SetChunk(long index, byte[] bytes)
    {
        if (bytes.Length != ChunkBytes) throw new ArgumentException("chunk of the wrong size", nameof(bytes));
        lock (_sync)
        {
            if (Array.TrueForAll(bytes, b => b == 0)) _chunks.Remove(index);
            else _chunks[index] = bytes;
        }
    }

    /// <summary>Sets the bits of the granules [offset, offset+length) touches.</summary>
    public void SetRange(long offset, long length)
    {
        if (length <= 0 || offset >= DiskLength) return;
        long end = Math.Min(offset + length, DiskLength);
        long first = offset >> GranularityBits, last = (end - 1) >> GranularityBits;
        long bitsPerChunk = ChunkBytes * 8L;
        lock (_sync)
        {
            for (long bit = first; bit <= last;)
            {
                long chunk = bit / bitsPerChunk;
                if (!_chunks.TryGetValue(chunk, out var bytes)) _chunks[chunk] = bytes = new byte[ChunkBytes];
                long inChunk = bit - chunk * bitsPerChunk;
                long stop = Math.Min(last - chunk * bitsPerChunk, bitsPerChunk - 1);
                for (long b = inChunk; b <= stop; b++) bytes[b >> 3] |= (byte)(1 << (int)(b & 7));
                bit = chunk * bitsPerChunk + stop + 1;
            }
        }
    }

    /// <summary>Whether the granule holding <paramref name="offset"/> is dirty.</summary>
    public bool IsDirty(long offset)
    {
        long bit = offset >> GranularityBits;
        long bitsPerChunk = ChunkBytes * 8L;
        lock (_sync)
            return _chunks.TryGetValue(bit / bitsPerChunk, out var bytes) && (bytes[(bit % bitsPerChunk) >> 3] & (1 << (int)(bit & 7))) != 0;
    }

    /// <summary>Clears every bit (block-dirty-bitmap-clear).</summary>
    public void Clear()
    {
        lock (_sync) _chunks.Clear();
    }

    /// <summary>The dirty byte ranges of the disk, in order, adjacent granules joined.</summary>
    public IEnumerable<(long Offset, long Length)> DirtyRanges()
    {
        long bitsPerChunk = ChunkBytes * 8L;
        long runStart = -1, runEnd = -1;
        List<(long Index, byte[] Bytes)> chunks;
        lock (_sync) chunks = _chunks.OrderBy(c => c.Key).Select(c => (c.Key, c.Value.ToArray())).ToList();
        foreach (var (chunk, bytes) in chunks)
        {
            for (int i = 0; i < bytes.Length; i++)
            {
                if (bytes[i] == 0) continue;
                for (int b = 0; b < 8; b++)
                {
                    if ((bytes[i] & (1 << b)) == 0) continue;
                    long start = (chunk * bitsPerChunk + i * 8L + b) << GranularityBits;
                    if (start >= DiskLength) continue;
                    long end = Math.Min(start + Granularity, DiskLength);
                    if (start == runEnd) runEnd = end;
                    else
                    {
                        if (runStart >= 0) yield return (runStart, runEnd - runStart);
                        runStart = start;
                        runEnd = end;
                    }
                }
            }
        }
        if (runStart >= 0) yield return (runStart, runEnd - runStart);
    }

    /// <summary>
    /// bdrv_merge_dirty_bitmap: sets the bits of every granule <paramref name="source"/> has dirty
    /// (granularities may differ; the disks may not).
    /// </summary>
    /// <exception cref="InvalidOperationException">The bitmaps cover disks of different sizes (QEMU's message).</exception>
    public void MergeFrom(DirtyBitmap source)
    {
        if (source.DiskLength != DiskLength)
            throw new InvalidOperationException($"Bitmaps are of different sizes (destination size is {DiskLength}, source size is {source.DiskLength}) and can't be merged");
        foreach (var (offset, length) in source.DirtyRanges().ToList()) SetRange(offset, length);
    }
}
