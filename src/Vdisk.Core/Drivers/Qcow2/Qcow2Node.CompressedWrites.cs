using Vdisk.Graph;
using Vdisk.Native;

namespace Vdisk.Drivers.Qcow2;

// qcow2_co_pwritev_compressed_part: clusters written compressed (qemu-io write -c, convert -c).
public sealed partial class Qcow2Node
{
    /// <inheritdoc />
    public override bool SupportsCompressedWrites => true;

    /// <summary>
    /// qcow2_co_pwritev_compressed_part: whole guest clusters (a short one only at the end of the
    /// image), each compressed on its own; data that does not shrink is written normally, as
    /// QEMU does.
    /// </summary>
    public override async ValueTask WriteCompressedAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken cancellationToken = default)
    {
        int cs = _g.ClusterSize;
        if (_g.OffsetInCluster(offset) != 0 || (data.Length % cs != 0 && offset + data.Length != Length))
            throw new NativeIOException(Errno.EINVAL, NativeIOException.Describe(Errno.EINVAL));
        for (int pos = 0; pos < data.Length; pos += cs)
        {
            var cluster = data.Slice(pos, Math.Min(cs, data.Length - pos));
            CheckCompressedWrite(offset + pos, cluster.Length);
            await WriteCompressedClusterAsync(offset + pos, cluster, CompressCluster(cluster.Span), cancellationToken).ConfigureAwait(false);
        }
    }

    private void CheckCompressedWrite(long offset, int length)
    {
        EnsureWritable();
        if (_g.OffsetInCluster(offset) != 0 || (length != _g.ClusterSize && offset + length != Length))
            throw new NativeIOException(Errno.EINVAL, NativeIOException.Describe(Errno.EINVAL), Filename);
    }

    /// <inheritdoc />
    public override int CompressedClusterSize => _g.ClusterSize;

    /// <inheritdoc />
    public override byte[]? CompressCluster(ReadOnlySpan<byte> cluster)
    {
        int cs = _g.ClusterSize;
        if (cluster.Length > cs) throw new ArgumentException("More than one cluster", nameof(cluster));
        if (cluster.Length == cs) return Qcow2Compression.Compress(_header.CompressionType, cluster);
        var full = new byte[cs];
        cluster.CopyTo(full);
        return Qcow2Compression.Compress(_header.CompressionType, full);
    }

    /// <inheritdoc />
    public override ValueTask EndCompressedWritesAsync(CancellationToken cancellationToken = default)
    {
        // The zero-length write of qcow2_co_pwritev_compressed_part: the file is truncated to its
        // length in whole sectors.
        EnsureWritable();
        return File.TruncateAsync(File.Length, cancellationToken);
    }

    /// <inheritdoc />
    public override async ValueTask WriteCompressedClusterAsync(long offset, ReadOnlyMemory<byte> cluster, byte[]? compressed, CancellationToken ct = default)
    {
        CheckCompressedWrite(offset, cluster.Length);
        if (compressed is null)
        {
            await WriteAsync(offset, cluster, WriteFlags.None, ct).ConfigureAwait(false);
            return;
        }
        await _lock.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            await PrepareForWritesLockedAsync().ConfigureAwait(false);
            long l1Index = _g.L1Index(offset);
            var table = await GetL2ForWriteLockedAsync(l1Index).ConfigureAwait(false);
            long host = await _refcounts.AllocateBytesAsync(compressed.Length).ConfigureAwait(false);
            await CheckMetadataOverlapAsync(host, compressed.Length).ConfigureAwait(false);
            await File.WriteAsync(host, compressed, WriteFlags.None, ct).ConfigureAwait(false);
            _dataSinceSync = true;
            table = await _l2Cache.GetAsync(table.Offset).ConfigureAwait(false);
            int index = _g.L2Index(offset);
            var old = EntryAt(table, index);
            SetEntry(table, index, L2Entry.CompressedAt(_g, host, compressed.Length));
            QueueFree(old, discard: false);
            _lastDecompressed = null;
        }
        finally
        {
            _lock.Release();
        }
    }
}
