using Vdisk.Graph;
using Vdisk.Native;

namespace Vdisk.Drivers;

/// <summary>
/// The block-layer behaviour QEMU gives every format driver for free, which the vpc, vdi and vhdx
/// nodes need spelled out: bdrv_pread's range check (reads past the end of the file are zeroes),
/// bdrv_pwrite_sync, the generic zero-write fallback for drivers without one, and the
/// BDRV_BLOCK_RECURSE step that asks the file whether a mapped range is a hole.
/// </summary>
internal static class FormatIo
{
    /// <summary>BDRV_MAX_LENGTH: requests that reach past it fail with EIO before any I/O.</summary>
    public const long MaxLength = long.MaxValue & ~((1L << 30) - 1);

    /// <summary>QEMU's "Could not open 'FILE': strerror" for a driver that failed without a message.</summary>
    public static NativeIOException OpenError(BlockNode file, int errno) =>
        new(errno, $"Could not open '{file.Filename}': {NativeIOException.Describe(errno)}", file.Filename);

    /// <summary>True when bdrv_check_request would accept the range.</summary>
    public static bool InRange(long offset, long length) =>
        offset >= 0 && length >= 0 && offset <= MaxLength && length <= MaxLength - offset;

    /// <summary>bdrv_pread: the range checked like QEMU's block layer, bytes past the file's end read as zeroes.</summary>
    public static ValueTask ReadAsync(BlockNode file, long offset, Memory<byte> buffer, CancellationToken ct = default)
    {
        if (!InRange(offset, buffer.Length)) throw new NativeIOException(Errno.EIO, NativeIOException.Describe(Errno.EIO), file.Filename);
        return file.ReadAsync(offset, buffer, ct);
    }

    /// <summary>bdrv_pwrite_sync: the write, then a flush of the file.</summary>
    public static async ValueTask WriteSyncAsync(BlockNode file, long offset, ReadOnlyMemory<byte> data, CancellationToken ct = default)
    {
        await file.WriteAsync(offset, data, WriteFlags.None, ct).ConfigureAwait(false);
        await file.FlushAsync(ct).ConfigureAwait(false);
    }

    /// <summary>
    /// bdrv_co_do_pwrite_zeroes for a driver without zero writes: ENOTSUP when the caller
    /// forbade the fallback (NBD's FAST_ZERO), otherwise buffers of zeroes written through the
    /// driver's own write path (so they allocate, as in QEMU).
    /// </summary>
    public static async ValueTask WriteZeroesByWritingAsync(BlockNode node, long offset, long length, ZeroFlags flags, CancellationToken ct)
    {
        if ((flags & ZeroFlags.NoFallback) != 0)
            throw new NativeIOException(Errno.ENOTSUP, NativeIOException.Describe(Errno.ENOTSUP), node.Filename);
        var zeroes = new byte[(int)Math.Min(length, 1 << 20)];
        var writeFlags = (flags & ZeroFlags.Fua) != 0 ? WriteFlags.Fua : WriteFlags.None;
        while (length > 0)
        {
            int n = (int)Math.Min(length, zeroes.Length);
            await node.WriteAsync(offset, zeroes.AsMemory(0, n), writeFlags, ct).ConfigureAwait(false);
            offset += n;
            length -= n;
        }
    }

    /// <summary>
    /// The status of a range a format maps 1:1 onto its file with BDRV_BLOCK_RECURSE: data at
    /// <paramref name="hostOffset"/>, and zero as well where the file has a hole or ends (the
    /// length then follows the file's answer, as bdrv_co_block_status limits it).
    /// </summary>
    public static async ValueTask<BlockStatus> RecurseIntoFileAsync(BlockNode file, long hostOffset, long length, CancellationToken ct)
    {
        const BlockStatusFlags mapped = BlockStatusFlags.Data | BlockStatusFlags.Allocated;
        if (hostOffset >= file.Length) return new BlockStatus(length, mapped | BlockStatusFlags.Zero, hostOffset, file);
        var inFile = await file.GetBlockStatusAsync(hostOffset, Math.Min(length, file.Length - hostOffset), ct).ConfigureAwait(false);
        if (inFile.Length <= 0) return new BlockStatus(length, mapped, hostOffset, file);
        bool zero = (inFile.Flags & BlockStatusFlags.Zero) != 0;
        // A hole that runs to the end of the file covers the rest of the range too: past the
        // end a format reads zeroes.
        if (zero && hostOffset + inFile.Length >= file.Length) return new BlockStatus(length, mapped | BlockStatusFlags.Zero, hostOffset, file);
        return new BlockStatus(Math.Min(length, inFile.Length), zero ? mapped | BlockStatusFlags.Zero : mapped, hostOffset, file);
    }

    /// <summary>
    /// A child request's result as QEMU's drivers vote on it (blkverify, quorum): 0, or -errno of
    /// its failure, whether it fails at once or later.
    /// </summary>
    public static async Task<int> ResultOf(Func<ValueTask> request)
    {
        try
        {
            await request().ConfigureAwait(false);
            return 0;
        }
        catch (NativeIOException e)
        {
            return -e.Errno;
        }
        catch (IOException)
        {
            return -Errno.EIO;
        }
    }
}
