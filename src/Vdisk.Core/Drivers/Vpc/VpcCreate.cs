using Vdisk.Graph;
using Vdisk.Native;

namespace Vdisk.Drivers.Vpc;

/// <summary>The options of a new vpc image, as qemu-img create's <c>-o</c> gives them.</summary>
/// <param name="Size">The requested virtual size in bytes.</param>
/// <param name="Subformat">"dynamic" (the default when null) or "fixed".</param>
/// <param name="ForceSize">force_size: keep the size as given instead of rounding it to a CHS geometry.</param>
public sealed record VpcCreateOptions(ulong Size, string? Subformat, bool ForceSize);

/// <summary>
/// vpc_co_create_opts and vpc_co_create: the size rounded up to a sector and then, unless
/// force_size is on, up to the next size a CHS geometry can express (Azure wants whole MiB
/// sizes, which only force_size keeps); a dynamic disk gets a footer, the dynamic header, a
/// block allocation table sized exactly for the disk (no spare entry for aligned sizes, another
/// Azure demand) and a footer copy; a fixed disk gets its footer after the data.
/// </summary>
public static class VpcCreate
{
    /// <summary>Block size QEMU gives new dynamic disks.</summary>
    public const uint DefaultBlockSize = 0x200000;

    /// <summary>
    /// The size the image will have, after the option checks QEMU makes before it writes.
    /// </summary>
    /// <exception cref="CreateException">QEMU's message for a bad subformat or a size too large (EFBIG).</exception>
    public static (long Size, VpcDiskType Type, VpcGeometry Geometry) Plan(VpcCreateOptions o)
    {
        var type = o.Subformat switch
        {
            null or "dynamic" => VpcDiskType.Dynamic,
            "fixed" => VpcDiskType.Fixed,
            _ => throw new CreateException($"Parameter 'subformat' does not accept value '{o.Subformat}'"),
        };
        // "Silently round up size" to a sector, then to what CHS can hold.
        ulong rounded = (o.Size + 511) & ~511UL;
        if (rounded < o.Size || rounded > long.MaxValue) throw new NativeIOException(Errno.EFBIG, "Disk size is too large, max size is 2040 GiB");
        long size = (long)rounded;
        if (!o.ForceSize) size = RoundedImageSize(size, forceSize: false).Sectors * 512;
        var (geometry, sectors) = RoundedImageSize(size, o.ForceSize);
        if (size != sectors * 512)
            throw new CreateException("The requested image size cannot be represented in CHS geometry",
                $"Try size={sectors * 512} or force-size=on (the latter makes the image incompatible with Virtual PC)");
        return (size, type, geometry);
    }

    /// <summary>
    /// calculate_rounded_image_size: the smallest geometry that holds <paramref name="totalSize"/>
    /// (or the maximum one with force_size), and the sectors the image then has.
    /// </summary>
    public static (VpcGeometry Geometry, long Sectors) RoundedImageSize(long totalSize, bool forceSize)
    {
        var geometry = new VpcGeometry(0, 0, 0);
        if (forceSize)
        {
            geometry = VpcGeometry.Max;
        }
        else
        {
            long totalSectors = Math.Min(VpcGeometry.MaxGeometrySectors, totalSize / 512);
            for (int i = 0; totalSectors > geometry.Sectors; i++) geometry = VpcGeometry.FromSectors(totalSectors + i);
        }
        if (geometry.Sectors == VpcGeometry.MaxGeometrySectors)
        {
            long totalSectors = totalSize / 512;
            if (totalSectors > VpcGeometry.MaxSectors) throw new NativeIOException(Errno.EFBIG, "Disk size is too large, max size is 2040 GiB");
            return (geometry, totalSectors);
        }
        return (geometry, geometry.Sectors);
    }

    /// <summary>
    /// Writes the new image onto <paramref name="file"/>, an empty file opened for writing and
    /// resizing (vpc_co_create's BlockBackend).
    /// </summary>
    public static async Task WriteAsync(BlockNode file, VpcCreateOptions o, CancellationToken ct = default)
    {
        var (size, type, geometry) = Plan(o);
        var footer = VpcFooter.Create(type, size, geometry, o.ForceSize, DateTimeOffset.UtcNow, Guid.NewGuid()).ToArray();
        if (type == VpcDiskType.Fixed)
        {
            await file.TruncateAsync(size + VpcFooter.Size, ct).ConfigureAwait(false);
            await file.WriteAsync(size, footer, WriteFlags.None, ct).ConfigureAwait(false);
            return;
        }
        try
        {
            long entries = (size / 512 + DefaultBlockSize / 512 - 1) / (DefaultBlockSize / 512);
            long tableBytes = (entries * 4 + 511) & ~511L;
            await file.WriteAsync(0, footer, WriteFlags.None, ct).ConfigureAwait(false);
            await file.WriteAsync(1536 + tableBytes, footer, WriteFlags.None, ct).ConfigureAwait(false);
            var table = new byte[tableBytes];
            table.AsSpan().Fill(0xff);
            await file.WriteAsync(3 * 512, table, WriteFlags.None, ct).ConfigureAwait(false);
            await file.WriteAsync(512, VpcDynamicHeader.Create((int)entries, DefaultBlockSize).ToArray(), WriteFlags.None, ct).ConfigureAwait(false);
        }
        catch (IOException)
        {
            throw new CreateException("Unable to create or write VHD header");
        }
    }
}
