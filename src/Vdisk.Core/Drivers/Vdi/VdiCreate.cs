using System.Buffers.Binary;
using Vdisk.Graph;
using Vdisk.Native;

namespace Vdisk.Drivers.Vdi;

/// <summary>The options of a new vdi image, as qemu-img create's <c>-o</c> gives them.</summary>
/// <param name="Size">The requested virtual size in bytes.</param>
/// <param name="Static">static=on: every block allocated now (the file grows to its full size, sparse).</param>
public sealed record VdiCreateOptions(ulong Size, bool Static);

/// <summary>
/// vdi_co_create_opts and vdi_co_do_create: the size rounded up to a sector, a header with the
/// block map right after it (0x200), the map itself (all unallocated, or block i at index i for
/// static images), and for static images the file truncated to hold every block.
/// </summary>
public static class VdiCreate
{
    /// <summary>Writes the new image onto <paramref name="file"/>, an empty file opened for writing and resizing.</summary>
    /// <exception cref="NativeIOException">ENOTSUP with QEMU's message when the size is too large.</exception>
    public static async Task WriteAsync(BlockNode file, VdiCreateOptions o, CancellationToken ct = default)
    {
        // "Silently round up size" to a sector.
        ulong bytes = (o.Size + 511) & ~511UL;
        if (bytes < o.Size || bytes > VdiHeader.MaxDiskSize)
            throw new NativeIOException(Errno.ENOTSUP, $"Unsupported VDI image size (size is 0x{(bytes < o.Size ? 0 : bytes):x}, max supported is 0x{VdiHeader.MaxDiskSize:x})");
        var type = o.Static ? VdiImageType.Static : VdiImageType.Dynamic;
        uint blocks = (uint)((bytes + VdiHeader.DefaultBlockSize - 1) / VdiHeader.DefaultBlockSize);
        uint mapBytes = (blocks * 4 + 511) & ~511u;
        var header = VdiHeader.Create(type, bytes, blocks, mapBytes, Guid.NewGuid(), Guid.NewGuid());
        await file.WriteAsync(0, header.ToArray(), WriteFlags.None, ct).ConfigureAwait(false);
        long offset = VdiHeader.Size;
        if (mapBytes > 0)
        {
            var map = new byte[mapBytes];
            for (uint i = 0; i < blocks; i++)
                BinaryPrimitives.WriteUInt32LittleEndian(map.AsSpan((int)(i * 4)), o.Static ? i : VdiHeader.Unallocated);
            await file.WriteAsync(offset, map, WriteFlags.None, ct).ConfigureAwait(false);
            offset += mapBytes;
        }
        if (o.Static) await file.TruncateAsync(offset + (long)blocks * VdiHeader.DefaultBlockSize, ct).ConfigureAwait(false);
    }
}
