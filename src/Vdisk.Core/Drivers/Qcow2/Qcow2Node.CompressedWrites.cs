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
            await WriteCompressedAsync(offset + pos, cluster, CompressCluster(cluster.Span), cancellationToken).ConfigureAwait(false);
        }
    }

    /// <inheritdoc />
    public override int CompressedWriteUnit => _g.ClusterSize;

    /// <inheritdoc />
    public override byte[]? CompressUnit(ReadOnlySpan<byte> unit) => CompressCluster(unit);

    /// <inheritdoc />
    public override ValueTask WriteCompressedUnitAsync(long offset, ReadOnlyMemory<byte> unit, byte[]? compressed, CancellationToken cancellationToken = default) =>
        WriteCompressedAsync(offset, unit, compressed, cancellationToken);

    /// <inheritdoc />
    /// <remarks>qcow2 truncates its file to its length in whole sectors.</remarks>
    public override async ValueTask EndCompressedWritesAsync(CancellationToken cancellationToken = default) =>
        await File.TruncateAsync(File.Length, cancellationToken).ConfigureAwait(false);

    private void CheckCompressedWrite(long offset, int length)
    {
        EnsureWritable();
        // qcow2_co_pwritev_compressed: compressed clusters cannot live in a data file.
        if (HasExternalDataFile) throw new NativeIOException(Errno.ENOTSUP, NativeIOException.Describe(Errno.ENOTSUP), Filename);
        if (_g.OffsetInCluster(offset) != 0 || (length != _g.ClusterSize && offset + length != Length))
            throw new NativeIOException(Errno.EINVAL, NativeIOException.Describe(Errno.EINVAL), Filename);
    }

    /// <summary>
    /// Compresses one guest cluster (a short last one is padded with zeroes) as
    /// <see cref="WriteCompressedAsync(long, ReadOnlyMemory{byte}, CancellationToken)"/> does;
    /// null when it does not shrink. Thread-safe and lock-free, so a copier can compress
    /// clusters in parallel and write them in order afterwards.
    /// </summary>
    public byte[]? CompressCluster(ReadOnlySpan<byte> cluster)
    {
        int cs = _g.ClusterSize;
        if (cluster.Length > cs) throw new ArgumentException("More than one cluster", nameof(cluster));
        if (cluster.Length == cs) return Qcow2Compression.Compress(_header.CompressionType, cluster);
        var full = new byte[cs];
        cluster.CopyTo(full);
        return Qcow2Compression.Compress(_header.CompressionType, full);
    }

    /// <summary>
    /// Writes a cluster that <see cref="CompressCluster"/> compressed to <paramref name="compressed"/>
    /// (null: it is written uncompressed).
    /// </summary>
    public async ValueTask WriteCompressedAsync(long offset, ReadOnlyMemory<byte> cluster, byte[]? compressed, CancellationToken ct = default)
    {
        CheckCompressedWrite(offset, cluster.Length);
        MarkBitmapsDirty(offset, cluster.Length);
        if (compressed is null)
        {
            await WriteAsync(offset, cluster, WriteFlags.None, ct).ConfigureAwait(false);
            return;
        }
        await LockWithoutAllocationsAsync(_g.ClusterStart(offset), _g.ClusterStart(offset) + _g.ClusterSize, ct).ConfigureAwait(false);
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
            await FreeAnyClusterAsync(old, discard: false).ConfigureAwait(false);
            _lastDecompressed = null;
        }
        finally
        {
            _lock.Release();
        }
    }
}
