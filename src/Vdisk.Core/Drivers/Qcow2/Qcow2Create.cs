using System.Buffers.Binary;
using Vdisk.Drivers.File;
using Vdisk.Graph;
using Vdisk.Native;
using Vdisk.Options;
using Vdisk.Permissions;

namespace Vdisk.Drivers.Qcow2;

/// <summary>The qcow2 settings of a create request, once QEMU's checks passed (qcow2_co_create).</summary>
internal sealed record Qcow2CreateSettings(long Size, int Version, long ClusterSize, Preallocation Preallocation, bool LazyRefcounts,
    int RefcountBits, Qcow2CompressionType CompressionType, string? BackingFile, string? BackingFormat,
    Qcow2Encryption? Encryption = null, string? DataFile = null, bool DataFileRaw = false);

/// <summary>The encryption of a new qcow2 image: "aes" or "luks" (with its options), and the passphrase.</summary>
internal sealed record Qcow2Encryption(string Format, Crypto.LuksCreateOptions? Luks, byte[] Passphrase);

/// <summary>
/// qcow2's create (qcow2_co_create_opts, qcow2_co_create): its option lists, the checks of a
/// request in QEMU's order, and the steps that write a new image.
/// </summary>
internal static class Qcow2Create
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

    internal static readonly QemuOptDesc[] OptionList =
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


    internal static readonly QemuOptDesc[] AmendOptionList =
    [
        Size, Compat, BackingFile, BackingFmt, DataFile, DataFileRaw, LazyRefcounts, RefcountBits, IterTime,
        new("encrypt.keyslot", QemuOptType.Number, "Select a single keyslot to modify explicitly"),
        new("encrypt.new-secret", QemuOptType.String, "New secret to set in the matching keyslots. Empty string to erase"),
        new("encrypt.old-secret", QemuOptType.String, "Select all keyslots that match this password"),
        new("encrypt.state", QemuOptType.String, "Select new state of affected keyslots (active/inactive)"),
    ];

    /// <summary>
    /// Creates the image in the steps QEMU takes, so that other processes see the same locks and
    /// the same files are left behind: the protocol layer is created (an empty file, or an NBD
    /// export opened as it is), the options are checked only now, the header is written through
    /// a protocol-level open, the new image is opened read-write to set its size, and a last
    /// metadata-only open follows, as bdrv_img_create does. When the creation fails after the
    /// file was created, the file is deleted, as qcow2_co_create_opts does (even a file that
    /// existed before).
    /// </summary>
    /// <exception cref="CreateException">QEMU would refuse; <see cref="CreateException.TooLarge"/> for EFBIG.</exception>
    public static async Task CreateAsync(CreateOptions o, CancellationToken ct)
    {
        ulong size = o.Size ?? throw new CreateException("Image creation needs a size parameter");
        var protocol = await ImageCreator.CreateProtocolAsync(o, ImageCreator.SectorsForExisting(size), fillFile: null, ct).ConfigureAwait(false);
        string? dataFile = o.Options.Get("data_file");
        bool dataFileCreated = false;
        try
        {
            if (dataFile is not null)
            {
                // qcow2_co_create_opts: the data file is created like the image's own file, at
                // the disk size with the preallocation asked for, before the options are checked.
                var grow = o.Options.Get("preallocation") switch
                {
                    "full" => Preallocation.Full,
                    "falloc" => Preallocation.Falloc,
                    _ => Preallocation.Off,
                };
                long dataSize = ImageCreator.SectorsForExisting(size);
                await FileCreate.CreateAsync(dataFile, o.Locking, (f, c) => FileCreate.GrowAsync(f, dataSize, grow, c), ct).ConfigureAwait(false);
                dataFileCreated = true;
            }
            await CreateOnProtocolAsync(o, Settings(o), protocol, ct).ConfigureAwait(false);
        }
        catch when (protocol.IsFile || dataFileCreated)
        {
            // bdrv_co_delete_file_noerr of both: the creation error is the one reported.
            if (protocol.IsFile) DeleteQuietly(o.Filename);
            if (dataFileCreated) DeleteQuietly(dataFile!);
            throw;
        }
    }

    private static void DeleteQuietly(string path)
    {
        try
        {
            System.IO.File.Delete(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // The creation error is the one reported.
        }
    }

    /// <summary>
    /// What qcow2_co_create_opts and qcow2_co_create make of the options, with their errors in
    /// their order: the values of compat, preallocation and compression_type, then the checks
    /// of the combination. The size is rounded up to whole sectors, silently.
    /// </summary>
    internal static Qcow2CreateSettings Settings(CreateOptions o)
    {
        var opts = o.Options;
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
        string? dataFile = opts.Get("data_file");
        if (dataFile is not null && version < 3)
            throw new CreateException("External data files are only supported with compatibility level 1.1 and above (use version=v3 or greater)");
        bool dataFileRaw = opts.GetBool("data_file_raw") == true;
        if (dataFileRaw && dataFile is null) throw new CreateException("data-file-raw requires data-file");
        if (dataFileRaw && o.BackingFile is not null) throw new CreateException("Backing file and data-file-raw cannot be used at the same time");
        // A raw data file must read as the disk: every cluster is mapped (preallocated metadata).
        if (dataFileRaw && preallocation == Preallocation.Off) preallocation = Preallocation.Metadata;
        if (compression != Qcow2CompressionType.Zlib && version < 3)
            throw new CreateException("Non-zlib compression type is only supported with compatibility level 1.1 and above (use version=v3 or greater)");
        ulong size = o.Size ?? throw new CreateException("Image creation needs a size parameter");
        ulong rounded = (size + 511) & ~511UL;
        // QEMU rounds in int64_t: a size past the last whole sector turns negative.
        if (rounded < size || rounded > long.MaxValue) throw new CreateException("Could not resize image: Image size cannot be negative");
        return new Qcow2CreateSettings((long)rounded, version, (long)clusterSize, preallocation, lazy, (int)refcountBits, compression,
            o.BackingFile, o.BackingFormat, EncryptionSettings(opts), dataFile, dataFileRaw);
    }

    /// <summary>
    /// qcow2_co_create_opts' encryption: <c>encryption=on</c> stands for <c>encrypt.format=aes</c>;
    /// each format needs <c>encrypt.key-secret</c> (qcrypto_block_create's errors).
    /// </summary>
    private static Qcow2Encryption? EncryptionSettings(QemuOpts opts)
    {
        string? format = opts.Get("encrypt.format");
        if (opts.GetBool("encryption") == true)
        {
            if (format is not null && format != "aes")
                throw new CreateException("Options \"encryption\" and \"encrypt.format\" are mutually exclusive");
            format = "aes";
        }
        if (format is null) return null;
        if (format is not ("aes" or "luks")) throw new CreateException($"Parameter 'encrypt.format' does not accept value '{format}'");
        try
        {
            var luks = format == "luks" ? Crypto.LuksCreateOptions.From(opts.Get, "encrypt.") : null;
            string secret = opts.Get("encrypt.key-secret") ?? throw new CreateException("Parameter 'encrypt.key-secret' is required for cipher");
            var passphrase = Crypto.Secrets.LookupPassphrase(secret);
            luks?.Validate();
            return new Qcow2Encryption(format, luks, passphrase);
        }
        catch (OptionException e)
        {
            throw new CreateException(e.Message);
        }
    }

    private static async Task CreateOnProtocolAsync(CreateOptions o, Qcow2CreateSettings settings, CreatedProtocol protocol, CancellationToken ct)
    {
        var writeAndResize = new PermissionPair(BlockPermission.Write | BlockPermission.Resize, BlockPermission.All);
        await using (var file = DiskImage.Open(ImageSource.FromOptions(protocol.Options.Clone()), OpenFlags.ReadWrite | OpenFlags.Resize, writeAndResize))
        {
            await WriteEmptyAsync(file.Root, settings).ConfigureAwait(false);
        }

        var options = new OptionDict();
        options.Set("driver", "qcow2");
        options.Set("file", protocol.Options.Clone());
        await using (var image = DiskImage.Open(ImageSource.FromOptions(options.Clone()), OpenFlags.ReadWrite | OpenFlags.Resize | OpenFlags.NoBacking))
        {
            try
            {
                await ((Qcow2Node)image.Root).ResizeAsync(settings.Size, settings.Preallocation, ct).ConfigureAwait(false);
                if (settings.Encryption is { } encryption) await ((Qcow2Node)image.Root).EncryptNewImageAsync(encryption, ct).ConfigureAwait(false);
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

    /// <summary>qcow2_co_create's first step: header, a one-cluster refcount table and one refcount block counting clusters 0-2.</summary>
    private static async Task WriteEmptyAsync(BlockNode file, Qcow2CreateSettings o)
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
        if (o.DataFile is not null)
        {
            header.DataFile = o.DataFile;
            header.IncompatibleFeatures |= Qcow2Features.IncompatDataFile;
            if (o.DataFileRaw) header.AutoclearFeatures |= Qcow2Features.AutoclearDataFileRaw;
        }
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
