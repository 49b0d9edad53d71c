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

    /// <summary>
    /// img_add_key_secrets: the options to open the new image with, the driver and every set
    /// option whose name ends in <c>key-secret</c> (<c>key-secret</c>, <c>encrypt.key-secret</c>),
    /// so that qemu-img convert and dd can open the encrypted image they created.
    /// </summary>
    public OptionDict OpenOptions()
    {
        var open = new OptionDict();
        open.Set("driver", Format);
        foreach (var d in Options.Descriptors)
            if (d.Name.EndsWith("key-secret", StringComparison.Ordinal) && Options.Get(d.Name) is { } value) open.Set(d.Name, value);
        return open;
    }
}

/// <summary>The create option lists of the formats (each driver's, then the file protocol's) and qemu-img 7.2's format names.</summary>
public static class CreateOptionLists
{
    /// <summary>
    /// The create options of <paramref name="format"/>, followed by the file protocol's when a
    /// target filename is known; null for a format vdisk cannot create.
    /// </summary>
    public static QemuOpts? ForFormat(string format, bool withProtocol)
    {
        if (BlockDrivers.Find(format)?.CreateOptionList is not { } list) return null;
        return new QemuOpts(withProtocol ? list.Concat(FileCreate.OptionList) : list);
    }

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
            // Opened by name as bdrv_img_create does: an nbd URL opens the NBD export, a json: name the node it describes.
            var options = BackingFileOpen.NodeOptionsFor(full, o.BackingFormat);
            // As bdrv_img_create: metadata only and sharing everything, so it takes no lock at all.
            backing = DiskImage.Open(ImageSource.FromOptions(options), OpenFlags.ForceShare | OpenFlags.NoBacking | OpenFlags.NoIo);
        }
        catch (Exception e) when (e is IOException or OptionException)
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
    /// bdrv_img_create's last step: the format's driver creates the image (its create callback
    /// starts from the protocol layer, <see cref="CreateProtocolAsync"/>).
    /// </summary>
    /// <exception cref="CreateException">QEMU would refuse; <see cref="CreateException.TooLarge"/> for EFBIG.</exception>
    public static Task CreateAsync(CreateOptions o, CancellationToken ct = default) =>
        (BlockDrivers.Find(o.Format) ?? throw new CreateException($"Unknown file format '{o.Format}'")).CreateAsync(o, ct);

    /// <summary>
    /// bdrv_co_create_file: the protocol layer of a new image. A file is created by file-posix
    /// (<see cref="FileCreate"/>; <paramref name="fillFile"/> runs under its create-time lock); a
    /// protocol that cannot create images (nbd) has its existing image opened and checked for
    /// <paramref name="existingSize"/> bytes. Returns the options that open the protocol node.
    /// </summary>
    /// <exception cref="CreateException">The protocol refuses.</exception>
    /// <exception cref="NativeIOException">The file cannot be created or locked.</exception>
    public static async Task<CreatedProtocol> CreateProtocolAsync(CreateOptions o, long existingSize,
        Func<FileNode, CancellationToken, Task>? fillFile, CancellationToken ct)
    {
        var protocolOptions = new OptionDict();
        BlockDrivers.FillProtocolOptions(protocolOptions, o.Filename);
        if (protocolOptions.Contains("driver"))
        {
            await CreateOnExistingAsync(protocolOptions.Clone(), existingSize, o.Options.Get("preallocation"), ct).ConfigureAwait(false);
            return new CreatedProtocol(protocolOptions, IsFile: false);
        }
        await FileCreate.CreateAsync(o.Filename, o.Locking, fillFile, ct).ConfigureAwait(false);
        return new CreatedProtocol(FileCreate.OpenOptions(o.Filename, o.Locking), IsFile: true);
    }

    /// <summary>The size an existing protocol image (nbd) must have for a new image of <paramref name="size"/> bytes: whole sectors.</summary>
    public static long SectorsForExisting(ulong size) => (long)Math.Min((size + 511) & ~511UL, long.MaxValue);

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
        ulong size = o.Size ?? throw new CreateException("Image creation needs a size parameter");
        var protocolOptions = (await CreateProtocolAsync(o, (long)Math.Min(size, long.MaxValue), fillFile: null, ct).ConfigureAwait(false)).Options;
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
}

/// <summary>The protocol layer of a new image: the options that open it, and whether it is a file vdisk created.</summary>
public sealed record CreatedProtocol(OptionDict Options, bool IsFile);

/// <summary>A create request QEMU would refuse: its message and the optional hint printed after it.</summary>
public sealed class CreateException(string message, string? hint = null, bool tooLarge = false) : IOException(message)
{
    /// <summary>Text printed after the message (QEMU's error hint), including its own newline if any.</summary>
    public string? Hint { get; } = hint;

    /// <summary>The size is too large for the format (EFBIG): qemu-img create words this its own way.</summary>
    public bool TooLarge { get; } = tooLarge;
}
