using System.Buffers.Binary;
using Vdisk.Drivers.File;
using Vdisk.Drivers.Qcow2;
using Vdisk.Graph;
using Vdisk.Locking;
using Vdisk.Native;
using Vdisk.Options;
using Vdisk.Permissions;

namespace Vdisk;

/// <summary>What to create: qemu-img create's format and its <c>-o</c> options (with the file protocol's).</summary>
public sealed class CreateOptions
{
    /// <summary>Options for a new <paramref name="format"/> image (raw, qcow2 or a driver with create options) at <paramref name="filename"/>.</summary>
    public CreateOptions(string filename, string format)
    {
        Filename = filename;
        Format = format;
        Options = CreateOptionLists.ForFormat(format, withProtocol: true)
            ?? throw new ArgumentException($"vdisk cannot create '{format}' images", nameof(format));
    }

    /// <summary>The format's driver name.</summary>
    public string Format { get; }
    /// <summary>The new image's file name.</summary>
    public string Filename { get; }
    /// <summary>The <c>-o</c> options as given (qemu_opts of the format and the file protocol).</summary>
    public QemuOpts Options { get; }
    /// <summary>Virtual size; null until given or taken from the backing file.</summary>
    public ulong? Size => Options.GetNumber("size");
    /// <summary>Backing file name as it will be stored (relative to the new image).</summary>
    public string? BackingFile => Options.Get("backing_file");
    /// <summary>Backing file format.</summary>
    public string? BackingFormat => Options.Get("backing_fmt");
    /// <summary>locking= of the file (on, off, auto).</summary>
    public LockingMode Locking { get; set; } = LockingMode.Auto;
}

/// <summary>The qcow2 settings of a create request, once QEMU's checks passed (qcow2_co_create).</summary>
internal sealed record Qcow2CreateSettings(long Size, int Version, long ClusterSize, Preallocation Preallocation, bool LazyRefcounts,
    int RefcountBits, Qcow2CompressionType CompressionType, string? BackingFile, string? BackingFormat);

/// <summary>The create option lists of qemu-img 7.2 for raw and qcow2 (and the file protocol), and qcow2's amend list.</summary>
public static class CreateOptionLists
{
    private static readonly QemuOptDesc Size = new("size", QemuOptType.Size, "Virtual disk size");
    private static readonly QemuOptDesc BackingFile = new("backing_file", QemuOptType.String, "File name of a base image");
    private static readonly QemuOptDesc BackingFmt = new("backing_fmt", QemuOptType.String, "Image format of the base image");
    private static readonly QemuOptDesc Compat = new("compat", QemuOptType.String, "Compatibility level (v2 [0.10] or v3 [1.1])");
    private static readonly QemuOptDesc DataFile = new("data_file", QemuOptType.String, "File name of an external data file");
    private static readonly QemuOptDesc DataFileRaw = new("data_file_raw", QemuOptType.Bool, "The external data file must stay valid as a raw image");
    private static readonly QemuOptDesc LazyRefcounts = new("lazy_refcounts", QemuOptType.Bool, "Postpone refcount updates", "off");
    private static readonly QemuOptDesc RefcountBits = new("refcount_bits", QemuOptType.Number, "Width of a reference count entry in bits", "16");
    private static readonly QemuOptDesc IterTime = new("encrypt.iter-time", QemuOptType.Number, "Time to spend in PBKDF in milliseconds");

    private static readonly QemuOptDesc[] Qcow2 =
    [
        new("encryption", QemuOptType.Bool, "Encrypt the image with format 'aes'. (Deprecated in favor of encrypt.format=aes)"),
        new("encrypt.format", QemuOptType.String, "Encrypt the image, format choices: 'aes', 'luks'"),
        new("encrypt.key-secret", QemuOptType.String, "ID of secret providing qcow AES key or LUKS passphrase"),
        new("encrypt.cipher-alg", QemuOptType.String, "Name of encryption cipher algorithm"),
        new("encrypt.cipher-mode", QemuOptType.String, "Name of encryption cipher mode"),
        new("encrypt.ivgen-alg", QemuOptType.String, "Name of IV generator algorithm"),
        new("encrypt.ivgen-hash-alg", QemuOptType.String, "Name of IV generator hash algorithm"),
        new("encrypt.hash-alg", QemuOptType.String, "Name of encryption hash algorithm"),
        IterTime,
        new("cluster_size", QemuOptType.Size, "qcow2 cluster size", "65536"),
        new("extended_l2", QemuOptType.Bool, "Extended L2 tables", "off"),
        new("preallocation", QemuOptType.String, "Preallocation mode (allowed values: off, metadata, falloc, full)"),
        new("compression_type", QemuOptType.String, "Compression method used for image cluster compression", "zlib"),
        Size, Compat, BackingFile, BackingFmt, DataFile, DataFileRaw, LazyRefcounts, RefcountBits,
    ];

    private static readonly QemuOptDesc[] Raw = [Size];

    private static readonly QemuOptDesc[] File =
    [
        Size,
        new("nocow", QemuOptType.Bool, "Turn off copy-on-write (valid only on btrfs)"),
        new("preallocation", QemuOptType.String, "Preallocation mode (allowed values: off, falloc, full)"),
        new("extent_size_hint", QemuOptType.Size, "Extent size hint for the image file, 0 to disable"),
    ];

    private static readonly QemuOptDesc[] Qcow2Amend =
    [
        Size, Compat, BackingFile, BackingFmt, DataFile, DataFileRaw, LazyRefcounts, RefcountBits, IterTime,
        new("encrypt.keyslot", QemuOptType.Number, "Select a single keyslot to modify explicitly"),
        new("encrypt.new-secret", QemuOptType.String, "New secret to set in the matching keyslots. Empty string to erase"),
        new("encrypt.old-secret", QemuOptType.String, "Select all keyslots that match this password"),
        new("encrypt.state", QemuOptType.String, "Select new state of affected keyslots (active/inactive)"),
    ];

    /// <summary>
    /// The create options of <paramref name="format"/> ("raw" or "qcow2"), followed by the file
    /// protocol's when a target filename is known; null for other formats.
    /// </summary>
    public static QemuOpts? ForFormat(string format, bool withProtocol)
    {
        IReadOnlyList<QemuOptDesc>? list = format switch { "qcow2" => Qcow2, "raw" => Raw, _ => BlockDrivers.Find(format)?.CreateOptionList };
        if (list is null) return null;
        return new QemuOpts(withProtocol ? list.Concat(File) : list);
    }

    /// <summary>qcow2's amend options (qemu-img amend -o).</summary>
    internal static QemuOpts ForQcow2Amend() => new(Qcow2Amend);

    /// <summary>The image formats qemu-img 7.2 knows (its "Supported formats" list).</summary>
    public static readonly IReadOnlySet<string> QemuFormats = new HashSet<string>(StringComparer.Ordinal)
    {
        "blkdebug", "blklogwrites", "blkverify", "bochs", "cloop", "compress", "copy-before-write", "copy-on-read", "dmg",
        "file", "ftp", "ftps", "gluster", "host_cdrom", "host_device", "http", "https", "iscsi", "iser", "luks", "nbd", "nfs",
        "null-aio", "null-co", "nvme", "parallels", "preallocate", "qcow", "qcow2", "qed", "quorum", "raw", "rbd",
        "replication", "snapshot-access", "ssh", "throttle", "vdi", "vhdx", "vmdk", "vpc", "vvfat",
    };

    /// <summary>The formats of <see cref="QemuFormats"/> that can create images (have create options).</summary>
    public static readonly IReadOnlySet<string> QemuCreatableFormats = new HashSet<string>(StringComparer.Ordinal)
    {
        "file", "gluster", "host_cdrom", "host_device", "iscsi", "iser", "luks", "nbd", "nfs", "nvme", "parallels", "qcow",
        "qcow2", "qed", "raw", "rbd", "ssh", "vdi", "vhdx", "vmdk", "vpc",
    };
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
    /// chain) to validate it and, when no size was given, to take its size.
    /// </summary>
    /// <exception cref="CreateException">The backing file cannot be used; the message and hint are QEMU's.</exception>
    public static async Task ResolveBackingAsync(CreateOptions o, bool openBacking, CancellationToken ct = default)
    {
        if (o.BackingFile is not { } backingFile) return;
        if (backingFile == o.Filename) throw new CreateException("Error: Trying to create an image with the same filename as the backing file");
        if (backingFile.Length == 0) throw new CreateException("Expected backing file name, got empty string");
        if (!openBacking)
        {
            if (o.BackingFormat is null) throw new CreateException("Backing file specified without backing format");
            return;
        }
        string full = BackingPath.Combine(o.Filename, backingFile);
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
            if (o.Size is null) o.Options.Set("size", backing.Length.ToString(System.Globalization.CultureInfo.InvariantCulture));
        }
    }

    /// <summary>
    /// What qcow2_co_create_opts and qcow2_co_create make of the options, with their errors in
    /// their order: the values of compat, preallocation and compression_type, then the checks
    /// of the combination. The size is rounded up to whole sectors, silently.
    /// </summary>
    internal static Qcow2CreateSettings Qcow2Settings(CreateOptions o)
    {
        var opts = o.Options;
        if (opts.Contains("encryption") || opts.Contains("encrypt.format"))
            throw new CreateException("vdisk does not support encrypted qcow2 images");
        if (opts.Contains("data_file")) throw new CreateException("vdisk does not support the qcow2 option 'data_file'");
        int version = opts.Get("compat") switch
        {
            null or "1.1" or "v3" => 3,
            "0.10" or "v2" => 2,
            var v => throw new CreateException($"Parameter 'version' does not accept value '{v}'"),
        };
        var preallocation = opts.Get("preallocation") switch
        {
            null or "off" => Preallocation.Off,
            "metadata" => Preallocation.Metadata,
            "falloc" => Preallocation.Falloc,
            "full" => Preallocation.Full,
            var v => throw new CreateException($"Parameter 'preallocation' does not accept value '{v}'"),
        };
        var compression = opts.Get("compression_type") switch
        {
            null or "zlib" => Qcow2CompressionType.Zlib,
            "zstd" => Qcow2CompressionType.Zstd,
            var v => throw new CreateException($"Parameter 'compression-type' does not accept value '{v}'"),
        };
        ulong clusterSize = opts.GetNumber("cluster_size") ?? 65536;
        bool extendedL2 = opts.GetBool("extended_l2") ?? false;
        if (extendedL2) throw new CreateException("vdisk does not support extended_l2=on");
        if (clusterSize < 512 || clusterSize > 2 << 20 || !ulong.IsPow2(clusterSize))
            throw new CreateException("Cluster size must be a power of two between 512 and 2048k");
        if (o.BackingFile is not null && preallocation != Preallocation.Off)
            throw new CreateException("Backing file and preallocation can only be used at the same time if extended_l2 is on");
        if (o.BackingFormat is not null && o.BackingFile is null)
            throw new CreateException("Backing format cannot be used without backing file");
        bool lazy = opts.GetBool("lazy_refcounts") ?? false;
        if (version < 3 && lazy)
            throw new CreateException("Lazy refcounts only supported with compatibility level 1.1 and above (use version=v3 or greater)");
        long refcountBits = (long)(opts.GetNumber("refcount_bits") ?? 16);
        if (refcountBits > 64 || refcountBits <= 0 || !long.IsPow2(refcountBits))
            throw new CreateException("Refcount width must be a power of two and may not exceed 64 bits");
        if (version < 3 && refcountBits != 16)
            throw new CreateException("Different refcount widths than 16 bits require compatibility level 1.1 or above (use version=v3 or greater)");
        if (opts.GetBool("data_file_raw") == true) throw new CreateException("data-file-raw requires data-file");
        if (compression != Qcow2CompressionType.Zlib && version < 3)
            throw new CreateException("Non-zlib compression type is only supported with compatibility level 1.1 and above (use version=v3 or greater)");
        ulong size = o.Size ?? throw new CreateException("Image creation needs a size parameter");
        ulong rounded = (size + 511) & ~511UL;
        if (rounded < size || rounded > long.MaxValue) throw new CreateException("Could not resize image: Invalid argument");
        return new Qcow2CreateSettings((long)rounded, version, (long)clusterSize, preallocation, lazy, (int)refcountBits, compression,
            o.BackingFile, o.BackingFormat);
    }

    /// <summary>
    /// Creates the image in the steps QEMU takes, so that other processes see the same locks
    /// and the same files are left behind: file-posix creates, locks and empties the file; for
    /// raw it then grows it to the size (whole sectors); for qcow2 the options are checked only
    /// now, then the header is written through a protocol-level open, the new image is opened
    /// read-write to set its size, and a last metadata-only open follows, as bdrv_img_create
    /// does. When a qcow2 creation fails after the file was created, the file is deleted, as
    /// qcow2_co_create_opts does (even a file that existed before).
    /// </summary>
    /// <exception cref="CreateException">QEMU would refuse; <see cref="CreateException.TooLarge"/> for EFBIG.</exception>
    public static async Task CreateAsync(CreateOptions o, CancellationToken ct = default)
    {
        if (o.Format is not ("raw" or "qcow2"))
        {
            await BlockDrivers.Find(o.Format)!.CreateAsync(o, ct).ConfigureAwait(false);
            return;
        }
        ulong size = o.Size ?? throw new CreateException("Image creation needs a size parameter");
        Preallocation rawPreallocation = Preallocation.Off;
        if (o.Format == "raw")
        {
            rawPreallocation = o.Options.Get("preallocation") switch
            {
                null or "off" => Preallocation.Off,
                "metadata" => Preallocation.Metadata,
                "falloc" => Preallocation.Falloc,
                "full" => Preallocation.Full,
                var v => throw new CreateException($"invalid parameter value: {v}"),
            };
        }
        var protocolOptions = new OptionDict();
        BlockDrivers.FillProtocolOptions(protocolOptions, o.Filename);
        if (protocolOptions.Contains("driver"))
        {
            // A protocol that cannot create images (nbd): what is there is opened and used.
            ulong sectors = (size + 511) & ~511UL;
            if (sectors < size || sectors > long.MaxValue) throw new CreateException("Could not resize image: Invalid argument");
            await CreateOnExistingAsync(protocolOptions.Clone(), (long)sectors, o.Options.Get("preallocation"), ct).ConfigureAwait(false);
            if (o.Format == "raw") return;
            await CreateQcow2Async(o, Qcow2Settings(o), protocolOptions, ct).ConfigureAwait(false);
            return;
        }
        var file = FileNode.Open(BlockGraph.GenerateName(), o.Filename, NodeFlags.ReadWrite, o.Locking, create: true);
        try
        {
            file.LockForCreate();
            file.Truncate(0);
            if (o.Format == "raw")
            {
                if (rawPreallocation == Preallocation.Metadata) throw new CreateException("Unsupported preallocation mode: metadata");
                ulong rounded = (size + 511) & ~511UL;
                if (rounded < size || rounded > long.MaxValue) throw new CreateException("Could not resize file: Invalid argument");
                await CreateRawAsync(file, (long)rounded, rawPreallocation, ct).ConfigureAwait(false);
            }
            file.UnlockAfterCreate();
        }
        catch (NativeIOException e) when (e.Errno == Errno.EFBIG)
        {
            throw new CreateException($"Could not resize file: {NativeIOException.Describe(e.Errno)}", tooLarge: true);
        }
        finally
        {
            await file.CloseAsync().ConfigureAwait(false);
        }
        if (o.Format == "raw") return;

        try
        {
            var fileOptions = new OptionDict();
            fileOptions.Set("driver", "file");
            fileOptions.Set("filename", o.Filename);
            fileOptions.Set("locking", o.Locking switch { LockingMode.On => "on", LockingMode.Off => "off", LockingMode.Posix => "posix", _ => "auto" });
            await CreateQcow2Async(o, Qcow2Settings(o), fileOptions, ct).ConfigureAwait(false);
        }
        catch
        {
            try
            {
                System.IO.File.Delete(o.Filename);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // bdrv_co_delete_file_noerr: the creation error is the one reported.
            }
            throw;
        }
    }

    /// <summary>
    /// The steps of a format whose create callback makes its file and writes its initial
    /// structure through a protocol-level open (vpc_co_create, vdi_co_do_create): file-posix
    /// creates, locks and empties the file (an NBD export is opened as it is), then
    /// <paramref name="writeFormat"/> writes through a node that may write and resize. QEMU
    /// leaves the file behind when the format step fails; so does this.
    /// </summary>
    /// <exception cref="CreateException">QEMU would refuse; <see cref="CreateException.TooLarge"/> for EFBIG.</exception>
    public static async Task CreateOnProtocolAsync(CreateOptions o, Func<BlockNode, CancellationToken, Task> writeFormat, CancellationToken ct = default)
    {
        var protocolOptions = new OptionDict();
        BlockDrivers.FillProtocolOptions(protocolOptions, o.Filename);
        if (protocolOptions.Contains("driver"))
        {
            ulong size = o.Size ?? throw new CreateException("Image creation needs a size parameter");
            await CreateOnExistingAsync(protocolOptions.Clone(), (long)Math.Min(size, long.MaxValue), o.Options.Get("preallocation"), ct).ConfigureAwait(false);
        }
        else
        {
            var file = FileNode.Open(BlockGraph.GenerateName(), o.Filename, NodeFlags.ReadWrite, o.Locking, create: true);
            try
            {
                file.LockForCreate();
                file.Truncate(0);
                file.UnlockAfterCreate();
            }
            finally
            {
                await file.CloseAsync().ConfigureAwait(false);
            }
            protocolOptions.Set("driver", "file");
            protocolOptions.Set("locking", o.Locking switch { LockingMode.On => "on", LockingMode.Off => "off", LockingMode.Posix => "posix", _ => "auto" });
        }
        var writeAndResize = new PermissionPair(BlockPermission.Write | BlockPermission.Resize, BlockPermission.All);
        await using var protocol = DiskImage.Open(ImageSource.FromOptions(protocolOptions), OpenFlags.ReadWrite | OpenFlags.Resize, writeAndResize);
        try
        {
            await writeFormat(protocol.Root, ct).ConfigureAwait(false);
            await protocol.FlushAsync(ct).ConfigureAwait(false);
        }
        catch (NativeIOException e)
        {
            throw new CreateException(e.Message, tooLarge: e.Errno == Errno.EFBIG);
        }
    }

    private static async Task CreateQcow2Async(CreateOptions o, Qcow2CreateSettings settings, OptionDict fileOptions, CancellationToken ct)
    {
        var writeAndResize = new PermissionPair(BlockPermission.Write | BlockPermission.Resize, BlockPermission.All);
        await using (var protocol = DiskImage.Open(ImageSource.FromOptions(fileOptions.Clone()), OpenFlags.ReadWrite | OpenFlags.Resize, writeAndResize))
        {
            await WriteEmptyQcow2Async(protocol.Root, settings).ConfigureAwait(false);
        }

        var options = new OptionDict();
        options.Set("driver", "qcow2");
        options.Set("file", fileOptions);
        await using (var image = DiskImage.Open(ImageSource.FromOptions(options.Clone()), OpenFlags.ReadWrite | OpenFlags.Resize | OpenFlags.NoBacking))
        {
            try
            {
                await ((Qcow2Node)image.Root).ResizeAsync(settings.Size, settings.Preallocation, ct).ConfigureAwait(false);
            }
            catch (NativeIOException e)
            {
                throw new CreateException($"Could not resize image: {e.Message}", tooLarge: e.Errno == Errno.EFBIG);
            }
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
    private static async Task CreateOnExistingAsync(OptionDict protocolOptions, long size, string? preallocation, CancellationToken ct)
    {
        string driver = ((Options.OptionScalar)protocolOptions["driver"]!).Text;
        if (preallocation is not (null or "off"))
            throw new CreateException($"Unsupported preallocation mode '{preallocation}'");
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
    private static async Task WriteEmptyQcow2Async(BlockNode file, Qcow2CreateSettings o)
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
public sealed class CreateException(string message, string? hint = null, bool tooLarge = false) : IOException(message)
{
    /// <summary>Text printed after the message (QEMU's error hint), including its own newline if any.</summary>
    public string? Hint { get; } = hint;

    /// <summary>The size is too large for the format (EFBIG): qemu-img create words this its own way.</summary>
    public bool TooLarge { get; } = tooLarge;
}
