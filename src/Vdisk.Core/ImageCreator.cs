using System.Buffers.Binary;
using Vdisk.Drivers.File;
using Vdisk.Drivers.Qcow2;
using Vdisk.Graph;
using Vdisk.Locking;
using Vdisk.Native;
using Vdisk.Options;
using Vdisk.Permissions;

namespace Vdisk;

/// <summary>What to create: qemu-img create's format and <c>-o</c> options.</summary>
public sealed class CreateOptions
{
    /// <summary>"qcow2" or "raw".</summary>
    public string Format { get; set; } = "raw";
    /// <summary>The new image's file name.</summary>
    public required string Filename { get; init; }
    /// <summary>Virtual size; null to take the backing file's.</summary>
    public long? Size { get; set; }
    /// <summary>Backing file name as it will be stored (relative to the new image).</summary>
    public string? BackingFile { get; set; }
    /// <summary>Backing file format.</summary>
    public string? BackingFormat { get; set; }
    /// <summary>Cluster size in bytes.</summary>
    public long ClusterSize { get; set; } = 65536;
    /// <summary>Preallocation mode.</summary>
    public Preallocation Preallocation { get; set; }
    /// <summary>lazy_refcounts.</summary>
    public bool LazyRefcounts { get; set; }
    /// <summary>2 (compat=0.10) or 3 (compat=1.1).</summary>
    public int Version { get; set; } = 3;
    /// <summary>Refcount width in bits.</summary>
    public long RefcountBits { get; set; } = 16;
    /// <summary>Compression type.</summary>
    public Qcow2CompressionType CompressionType { get; set; }
    /// <summary>extended_l2 (only "off" is supported).</summary>
    public bool ExtendedL2 { get; set; }
    /// <summary>locking= of the file (on, off, auto).</summary>
    public LockingMode Locking { get; set; } = LockingMode.Auto;
}

/// <summary>
/// Creates images like qemu-img create: the file is created and locked the way file-posix does
/// (so creating over an image in use fails and leaves it untouched), then the format writes its
/// initial structure and grows to the size through the normal open path.
/// </summary>
public static class ImageCreator
{
    /// <summary>
    /// bdrv_img_create's backing checks: opens the backing file (read-only, force-share, no
    /// chain) to validate it and, when <see cref="CreateOptions.Size"/> is unset, to take its size.
    /// </summary>
    /// <exception cref="CreateException">The backing file cannot be used; the message and hint are QEMU's.</exception>
    public static async Task ResolveBackingAsync(CreateOptions o, bool openBacking, CancellationToken ct = default)
    {
        if (o.BackingFile is null) return;
        if (o.BackingFile == o.Filename) throw new CreateException("Error: Trying to create an image with the same filename as the backing file");
        if (o.BackingFile.Length == 0) throw new CreateException("Expected backing file name, got empty string");
        if (!openBacking)
        {
            if (o.BackingFormat is null) throw new CreateException("Backing file specified without backing format");
            return;
        }
        string full = Qcow2Driver.CombineBackingPath(o.Filename, o.BackingFile);
        DiskImage backing;
        try
        {
            var options = new OptionDict();
            if (o.BackingFormat is not null) options.Set("driver", o.BackingFormat);
            var file = new OptionDict();
            file.Set("driver", "file");
            file.Set("filename", full);
            options.Set("file", file);
            // As bdrv_img_create: metadata only and sharing everything, so it takes no lock at all.
            backing = DiskImage.Open(ImageSource.FromOptions(options), OpenFlags.ForceShare | OpenFlags.NoBacking | OpenFlags.NoIo);
        }
        catch (IOException e)
        {
            throw new CreateException(e.Message, "Could not open backing image.\n");
        }
        await using (backing.ConfigureAwait(false))
        {
            if (o.BackingFormat is null)
                throw new CreateException("Backing file specified without backing format", $"Detected format of {backing.Root.DriverName}.");
            o.Size ??= backing.Length;
        }
    }

    /// <summary>Checks the qcow2 option combinations QEMU refuses (after "Formatting..." is printed).</summary>
    public static void Validate(CreateOptions o)
    {
        if (o.Size is null) throw new CreateException("Image creation needs a size parameter");
        if (o.Format != "qcow2") return;
        long cs = o.ClusterSize;
        if (cs < 512 || cs > 2 << 20 || (cs & (cs - 1)) != 0)
            throw new CreateException("Cluster size must be a power of two between 512 and 2048k");
        if (o.RefcountBits < 1 || o.RefcountBits > 64 || (o.RefcountBits & (o.RefcountBits - 1)) != 0)
            throw new CreateException("Refcount width must be a power of two and may not exceed 64 bits");
        if (o.Version == 2)
        {
            if (o.RefcountBits != 16)
                throw new CreateException("Different refcount widths than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)");
            if (o.LazyRefcounts)
                throw new CreateException("Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)");
            if (o.CompressionType != Qcow2CompressionType.Zlib)
                throw new CreateException("Non-zlib compression type is only supported with compatibility level 1.1 and above (use compat=1.1 or greater)");
        }
        if (o.BackingFile is not null && o.Preallocation != Preallocation.Off && !o.ExtendedL2)
            throw new CreateException("Backing file and preallocation can only be used at the same time if extended_l2 is on");
        if (o.ExtendedL2) throw new CreateException("vdisk does not support extended_l2=on");
        if ((o.Size.Value & 511) != 0) throw new CreateException("Image size must be a multiple of 512 bytes");
    }

    /// <summary>
    /// Creates the image (validating first), in the steps QEMU takes so that other processes see
    /// the same locks: file-posix's create lock around creating and truncating the file; for
    /// qcow2 then the file opened as a protocol user (write and resize, sharing everything) to
    /// write the header, the new image opened read-write to set its size, and a last metadata-only
    /// open as bdrv_img_create does.
    /// </summary>
    public static async Task CreateAsync(CreateOptions o, CancellationToken ct = default)
    {
        Validate(o);
        long size = o.Size!.Value;
        var fileOptions = new OptionDict();
        BlockDrivers.FillProtocolOptions(fileOptions, o.Filename);
        if (fileOptions.Contains("driver"))
        {
            // A protocol that cannot create images (nbd): open what is there and use it.
            await CreateOnExistingAsync(fileOptions.Clone(), size, o.Preallocation, ct).ConfigureAwait(false);
            if (o.Format == "raw") return;
        }
        else
        {
            var file = FileNode.Open(BlockGraph.GenerateName(), o.Filename, NodeFlags.ReadWrite, o.Locking, create: true);
            try
            {
                file.LockForCreate();
                file.Truncate(0);
                if (o.Format == "raw") await CreateRawAsync(file, size, o.Preallocation, ct).ConfigureAwait(false);
                file.UnlockAfterCreate();
            }
            finally
            {
                await file.CloseAsync().ConfigureAwait(false);
            }
            if (o.Format == "raw") return;

            fileOptions = new OptionDict();
            fileOptions.Set("driver", "file");
            fileOptions.Set("filename", o.Filename);
            fileOptions.Set("locking", o.Locking switch { LockingMode.On => "on", LockingMode.Off => "off", LockingMode.Posix => "posix", _ => "auto" });
        }
        var writeAndResize = new PermissionPair(BlockPermission.Write | BlockPermission.Resize, BlockPermission.All);
        await using (var protocol = DiskImage.Open(ImageSource.FromOptions(fileOptions.Clone()), OpenFlags.ReadWrite | OpenFlags.Resize, writeAndResize))
        {
            await WriteEmptyQcow2Async(protocol.Root, o).ConfigureAwait(false);
        }

        var options = new OptionDict();
        options.Set("driver", "qcow2");
        options.Set("file", fileOptions);
        await using (var image = DiskImage.Open(ImageSource.FromOptions(options.Clone()), OpenFlags.ReadWrite | OpenFlags.Resize | OpenFlags.NoBacking))
        {
            await ((Qcow2Node)image.Root).ResizeAsync(size, o.Preallocation, ct).ConfigureAwait(false);
            await image.FlushAsync(ct).ConfigureAwait(false);
        }
        await using (DiskImage.Open(ImageSource.FromOptions(options), OpenFlags.ReadWrite | OpenFlags.NoIo | OpenFlags.NoBacking))
        {
        }
    }

    /// <summary>
    /// bdrv_co_create_opts_simple, for protocols without a create step (nbd): no preallocation,
    /// the existing image opened read-write, a size check that may shrink but never grows
    /// ("Cannot grow NBD nodes"), and the first sector zeroed so that no old header is probed.
    /// </summary>
    private static async Task CreateOnExistingAsync(OptionDict protocolOptions, long size, Preallocation preallocation, CancellationToken ct)
    {
        string driver = ((Options.OptionScalar)protocolOptions["driver"]!).Text;
        if (preallocation != Preallocation.Off)
            throw new CreateException($"Unsupported preallocation mode '{preallocation.ToString().ToLowerInvariant()}'");
        DiskImage image;
        try
        {
            image = DiskImage.Open(ImageSource.FromOptions(protocolOptions), OpenFlags.ReadWrite | OpenFlags.Resize);
        }
        catch (Exception e) when (e is IOException or OptionException)
        {
            throw new CreateException($"Protocol driver '{driver}' does not support image creation, and opening the image failed: {e.Message}");
        }
        await using (image.ConfigureAwait(false))
        {
            if (image.Root is Drivers.Nbd.NbdNode nbd) nbd.EnsureAtLeast(size);
            long clear = Math.Min(image.Length, 512);
            if (clear == 0) return;
            try
            {
                await image.WriteZeroesAsync(0, clear, ZeroFlags.MayUnmap, ct).ConfigureAwait(false);
            }
            catch (NativeIOException e)
            {
                throw new CreateException($"Failed to clear the new image's first sector: {e.Message}");
            }
        }
    }

    private static async Task CreateRawAsync(FileNode file, long size, Preallocation preallocation, CancellationToken ct)
    {
        switch (preallocation)
        {
            case Preallocation.Falloc:
                if (!file.Preallocate(0, size)) await file.WriteZeroesAsync(0, size, ZeroFlags.None, ct).ConfigureAwait(false);
                file.Truncate(size);
                break;
            case Preallocation.Full:
                var zeroes = new byte[Math.Min(size, 1 << 20)];
                for (long pos = 0; pos < size; pos += zeroes.Length)
                    await file.WriteAsync(pos, zeroes.AsMemory(0, (int)Math.Min(zeroes.Length, size - pos)), WriteFlags.None, ct).ConfigureAwait(false);
                file.Truncate(size);
                break;
            default:
                file.Truncate(size);
                break;
        }
        await file.FlushAsync(ct).ConfigureAwait(false);
    }

    /// <summary>qcow2_co_create's first step: header, a one-cluster refcount table and one refcount block counting clusters 0-2.</summary>
    private static async Task WriteEmptyQcow2Async(BlockNode file, CreateOptions o)
    {
        int clusterBits = System.Numerics.BitOperations.Log2((ulong)o.ClusterSize);
        int order = System.Numerics.BitOperations.Log2((ulong)o.RefcountBits);
        int cs = 1 << clusterBits;
        var header = new Qcow2Header
        {
            Version = (uint)o.Version,
            ClusterBits = clusterBits,
            RefcountOrder = order,
            RefcountTableOffset = (ulong)cs,
            RefcountTableClusters = 1,
            CompressionType = o.CompressionType,
            BackingFile = o.BackingFile,
        };
        if (o.LazyRefcounts) header.CompatibleFeatures |= Qcow2Features.CompatLazyRefcounts;
        if (o.CompressionType != Qcow2CompressionType.Zlib) header.IncompatibleFeatures |= Qcow2Features.IncompatCompression;
        if (o.BackingFile is not null && o.BackingFormat is not null) header.BackingFormat = o.BackingFormat;
        byte[] cluster0;
        try
        {
            cluster0 = header.Serialize();
        }
        catch (Qcow2FormatException e)
        {
            throw new CreateException(e.Message);
        }
        var tables = new byte[2 * cs];
        BinaryPrimitives.WriteUInt64BigEndian(tables, (ulong)(2 * cs));
        var g = header.Geometry;
        for (int c = 0; c < 3; c++) RefcountCodec.Set(tables.AsSpan(cs), c, g.RefcountOrder, 1);
        await file.WriteAsync(0, cluster0).ConfigureAwait(false);
        await file.WriteAsync(cs, tables).ConfigureAwait(false);
        await file.FlushAsync().ConfigureAwait(false);
    }
}

/// <summary>A create request QEMU would refuse: its message and the optional hint printed after it.</summary>
public sealed class CreateException(string message, string? hint = null) : IOException(message)
{
    /// <summary>Text printed after the message (QEMU's error hint), including its own newline if any.</summary>
    public string? Hint { get; } = hint;
}
