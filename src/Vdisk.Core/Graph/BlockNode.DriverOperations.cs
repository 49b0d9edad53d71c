using Vdisk.Native;
using Vdisk.Options;

namespace Vdisk.Graph;

/// <summary>
/// The operations beyond plain I/O that only some formats have (QEMU's optional BlockDriver
/// callbacks: bdrv_co_pwritev_compressed_part, bdrv_co_check, bdrv_amend_options,
/// bdrv_change_backing_file, bdrv_make_empty, preallocating bdrv_co_truncate). A driver overrides
/// what it supports; the defaults refuse with QEMU's message for a driver without the callback.
/// Tools reach them through <see cref="DiskImage"/>, which applies the permission gate first.
/// </summary>
public abstract partial class BlockNode
{
    /// <summary>True when the driver writes compressed clusters (block_driver_can_compress).</summary>
    public virtual bool SupportsCompressedWrites => false;

    /// <summary>
    /// Writes <paramref name="data"/> compressed (bdrv_co_pwritev_compressed); the driver
    /// decides the alignment it needs (EINVAL otherwise).
    /// </summary>
    public virtual ValueTask WriteCompressedAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken cancellationToken = default) =>
        throw new NativeIOException(Errno.ENOTSUP, NativeIOException.Describe(Errno.ENOTSUP));

    /// <summary>
    /// The unit each compressed write covers (bdrv_get_info's cluster size: qcow2's cluster,
    /// vmdk's grain); 0 when the node writes no compressed data or has no single unit.
    /// </summary>
    public virtual int CompressedWriteUnit => 0;

    /// <summary>True when the format takes only compressed writes (needs_compressed_writes: stream-optimized vmdk).</summary>
    public virtual bool RequiresCompressedWrites => false;

    /// <summary>
    /// The compressed form of one unit of <see cref="CompressedWriteUnit"/> bytes (a short last
    /// one padded), null when it is to be stored plain. Thread-safe and lock-free, so a copier
    /// can compress in parallel and write in order with <see cref="WriteCompressedUnitAsync"/>.
    /// </summary>
    public virtual byte[]? CompressUnit(ReadOnlySpan<byte> unit) =>
        throw new NativeIOException(Errno.ENOTSUP, NativeIOException.Describe(Errno.ENOTSUP));

    /// <summary>Writes one unit that <see cref="CompressUnit"/> compressed to <paramref name="compressed"/> (null: written plain).</summary>
    public virtual ValueTask WriteCompressedUnitAsync(long offset, ReadOnlyMemory<byte> unit, byte[]? compressed, CancellationToken cancellationToken = default) =>
        throw new NativeIOException(Errno.ENOTSUP, NativeIOException.Describe(Errno.ENOTSUP));

    /// <summary>
    /// The zero-length compressed write that ends qemu-img convert -c (bdrv_co_pwritev_compressed
    /// with no bytes): the driver grows its files to whole sectors, as compressed data ends anywhere.
    /// </summary>
    public virtual ValueTask EndCompressedWritesAsync(CancellationToken cancellationToken = default) => ValueTask.CompletedTask;

    /// <summary>
    /// Resizes with a preallocation mode for the grown part (bdrv_co_truncate's prealloc). Without
    /// a format of its own for preallocation the node truncates plainly (the file protocol
    /// overrides this to reserve the grown part); metadata preallocation is refused as file-posix
    /// refuses it.
    /// </summary>
    public virtual ValueTask TruncateAsync(long length, Preallocation preallocation, CancellationToken cancellationToken = default) =>
        preallocation == Preallocation.Metadata
            ? throw new NativeIOException(Errno.ENOTSUP, "Unsupported preallocation mode: metadata")
            : TruncateAsync(length, cancellationToken);

    /// <summary>
    /// Checks the image's consistency, repairing what <paramref name="mode"/> allows (bdrv_co_check);
    /// <paramref name="log"/> gets the lines QEMU prints on stderr while checking.
    /// </summary>
    /// <exception cref="NativeIOException">ENOTSUP: the format has no check.</exception>
    /// <exception cref="ImageCheckException">The check could not run to its end.</exception>
    public virtual Task<ImageCheck> CheckAsync(RepairMode mode, Action<string>? log, CancellationToken cancellationToken = default) =>
        throw new NativeIOException(Errno.ENOTSUP, "This image format does not support checks");

    /// <summary>
    /// Changes format options in place (bdrv_amend_options) from the driver's amend list
    /// (<see cref="IBlockDriver.CreateAmendOptions"/>); <paramref name="status"/> gets (done, total).
    /// </summary>
    public virtual ValueTask AmendAsync(QemuOpts options, bool force, Action<long, long>? status = null, CancellationToken cancellationToken = default) =>
        throw new NativeIOException(Errno.ENOTSUP, $"Block driver '{DriverName}' does not support option amendment");

    /// <summary>True when the driver can rewrite the backing file name it stores (has bdrv_change_backing_file).</summary>
    public virtual bool CanChangeBackingFile => false;

    /// <summary>
    /// Rewrites the backing file name and format the image stores (bdrv_change_backing_file);
    /// a null name removes both.
    /// </summary>
    public virtual ValueTask ChangeBackingFileAsync(string? name, string? format, CancellationToken cancellationToken = default) =>
        throw new NativeIOException(Errno.ENOTSUP, NativeIOException.Describe(Errno.ENOTSUP));

    /// <summary>
    /// The backing file this image names, resolved against the image's own name
    /// (bs->backing_file after bdrv_get_full_backing_filename); null without one.
    /// </summary>
    public virtual string? FullBackingFilename => null;

    /// <summary>Drops everything this layer holds, so that all ranges read from the backing file again (bdrv_make_empty).</summary>
    public virtual ValueTask MakeEmptyAsync(CancellationToken cancellationToken = default) =>
        throw new NativeIOException(Errno.ENOTSUP, $"{DriverName} does not support emptying nodes");

    /// <summary>
    /// bdrv_snapshot_create as qemu-img calls it: an internal snapshot named <paramref name="name"/>
    /// taken at <paramref name="now"/>, without VM state. Refused (ENOTSUP) by drivers without
    /// internal snapshots.
    /// </summary>
    public virtual Task CreateSnapshotAsync(string name, DateTimeOffset now, CancellationToken cancellationToken = default) =>
        throw new Native.NativeIOException(Native.Errno.ENOTSUP, Native.NativeIOException.Describe(Native.Errno.ENOTSUP));

    /// <summary>bdrv_snapshot_goto: the snapshot with this id (else this name) becomes the image's state; ENOENT when there is none.</summary>
    public virtual Task ApplySnapshotAsync(string idOrName, CancellationToken cancellationToken = default) =>
        throw new Native.NativeIOException(Native.Errno.ENOTSUP, "Block driver does not support snapshots");

    /// <summary>bdrv_snapshot_delete of the snapshot with this id and name; ENOENT when there is none.</summary>
    public virtual Task DeleteSnapshotAsync(string id, string name, CancellationToken cancellationToken = default) =>
        throw new Native.NativeIOException(Native.Errno.ENOENT, "snapshot not found");

    /// <summary>
    /// bdrv_co_writev_vmstate: writes <paramref name="data"/> at <paramref name="position"/> of the
    /// VM state area (qcow2 keeps one past the guest disk). A driver without one passes the request
    /// to its primary child, as QEMU does; at the bottom the answer is ENOTSUP.
    /// </summary>
    public virtual ValueTask SaveVmStateAsync(long position, ReadOnlyMemory<byte> data, CancellationToken cancellationToken = default) =>
        PrimaryChild?.Node is { } child
            ? child.SaveVmStateAsync(position, data, cancellationToken)
            : throw new NativeIOException(Errno.ENOTSUP, NativeIOException.Describe(Errno.ENOTSUP));

    /// <summary>bdrv_co_readv_vmstate: reads the VM state area, like <see cref="SaveVmStateAsync"/>.</summary>
    public virtual ValueTask LoadVmStateAsync(long position, Memory<byte> buffer, CancellationToken cancellationToken = default) =>
        PrimaryChild?.Node is { } child
            ? child.LoadVmStateAsync(position, buffer, cancellationToken)
            : throw new NativeIOException(Errno.ENOTSUP, NativeIOException.Describe(Errno.ENOTSUP));

    /// <summary>
    /// bdrv_snapshot_load_tmp: a read-only node shows an internal snapshot in place of its active
    /// state until it closes (qemu-img convert -l). Matches the snapshot by both when
    /// <paramref name="id"/> and <paramref name="name"/> are given, else by the one given.
    /// </summary>
    /// <exception cref="NativeIOException">ENOENT without such a snapshot; ENOTSUP for drivers without internal snapshots.</exception>
    public virtual Task LoadSnapshotTemporarilyAsync(string? id, string? name, CancellationToken cancellationToken = default) =>
        throw new NativeIOException(Errno.ENOTSUP,
            $"Block format '{DriverName}' used by device '' does not support temporarily loading internal snapshots");

    /// <summary>The dirty bitmaps of this node (persistent ones are loaded from the image on open).</summary>
    public virtual IReadOnlyList<DirtyBitmap> DirtyBitmaps => [];

    /// <summary>True when the format stores bitmaps in the image (bdrv_supports_persistent_dirty_bitmap).</summary>
    public virtual bool SupportsPersistentBitmaps => false;

    /// <summary>
    /// block-dirty-bitmap-add with persistent=true: a new clean bitmap of this granularity, stored
    /// in the image when it closes.
    /// </summary>
    /// <exception cref="InvalidOperationException">QEMU's reason the bitmap cannot be added.</exception>
    public virtual DirtyBitmap AddPersistentBitmap(string name, long granularity, bool disabled) =>
        throw new InvalidOperationException($"Can't store persistent bitmaps to {NodeName}: {NativeIOException.Describe(Errno.ENOTSUP)}");

    /// <summary>block-dirty-bitmap-remove: the bitmap leaves the node (and the image, when it closes).</summary>
    public virtual void RemovePersistentBitmap(DirtyBitmap bitmap) =>
        throw new InvalidOperationException($"Can't store persistent bitmaps to {NodeName}");

    /// <summary>Tells the node that one of its bitmaps was enabled, disabled, cleared or merged into.</summary>
    public virtual void BitmapsChanged() { }

    /// <summary>True for a raw node whose format was probed rather than given (raw_open warns about it).</summary>
    public virtual bool IsProbedRaw => false;
}
