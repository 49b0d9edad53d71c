using System.Buffers.Binary;
using System.Globalization;
using System.Text;
using Vdisk.Drivers.File;
using Vdisk.Graph;
using Vdisk.Locking;
using Vdisk.Native;
using Vdisk.Options;
using Vdisk.Permissions;

namespace Vdisk.Drivers.Vmdk;

/// <summary>qemu-img create's vmdk options (<c>-o</c>), as strings until <see cref="VmdkCreator"/> checks them.</summary>
public sealed class VmdkCreateOptions
{
    /// <summary>The image (descriptor) file name.</summary>
    public required string Filename { get; init; }
    /// <summary>Virtual size in bytes (rounded up to whole sectors).</summary>
    public required long Size { get; init; }
    /// <summary>subformat: monolithicSparse (default), monolithicFlat, twoGbMaxExtentSparse, twoGbMaxExtentFlat, streamOptimized.</summary>
    public string? Subformat { get; init; }
    /// <summary>adapter_type: ide (default), buslogic, lsilogic, legacyESX.</summary>
    public string? AdapterType { get; init; }
    /// <summary>backing_file, stored as parentFileNameHint.</summary>
    public string? BackingFile { get; init; }
    /// <summary>backing_fmt: must be vmdk if given.</summary>
    public string? BackingFormat { get; init; }
    /// <summary>hwversion ("undefined" means none: "4", or "6" with compat6).</summary>
    public string? HwVersion { get; init; }
    /// <summary>toolsversion (default 2147483647).</summary>
    public string? ToolsVersion { get; init; }
    /// <summary>compat6: virtual hardware version 6.</summary>
    public bool Compat6 { get; init; }
    /// <summary>zeroed_grain: grain table entry 1 means zeroes (version 2 extents).</summary>
    public bool ZeroedGrain { get; init; }
    /// <summary>locking= of the files created.</summary>
    public LockingMode Locking { get; init; } = LockingMode.Auto;
}

/// <summary>
/// QEMU's vmdk_co_create_opts and vmdk_co_do_create: the descriptor file is created first and
/// kept open (locked) while each extent file is created the way file-posix creates a file, then
/// opened as a protocol user to write its sparse header and grain directories (or to be
/// truncated to its size, flat), and closed; last the descriptor text is written (embedded at
/// sector 1 of a monolithic sparse file, or as the whole descriptor file).
/// </summary>
public static class VmdkCreator
{
    /// <summary>Split extents hold 2 GiB each.</summary>
    private const long SplitExtentBytes = 0x80000000;

    /// <summary>The subformat names (BlockdevVmdkSubformat).</summary>
    public static readonly string[] Subformats = ["monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse", "twoGbMaxExtentFlat", "streamOptimized"];

    /// <summary>The adapter type names (BlockdevVmdkAdapterType).</summary>
    public static readonly string[] AdapterTypes = ["ide", "buslogic", "lsilogic", "legacyESX"];

    /// <summary>The checks vmdk_co_create_opts and vmdk_co_do_create make before creating any file, in their order.</summary>
    /// <exception cref="CreateException">QEMU's message.</exception>
    public static void Validate(VmdkCreateOptions o)
    {
        if (o.BackingFormat is not null && o.BackingFormat != "vmdk") throw new CreateException("backing_file must be a vmdk image");
        if (o.Filename.Length == 0) throw new CreateException("No filename provided");
        if (o.AdapterType is not null && !AdapterTypes.Contains(o.AdapterType)) throw new CreateException($"invalid parameter value: {o.AdapterType}");
        if (o.Subformat is not null && !Subformats.Contains(o.Subformat)) throw new CreateException($"invalid parameter value: {o.Subformat}");
        if (o.Compat6 && HwVersionGiven(o)) throw new CreateException("compat6 cannot be enabled with hwversion set");
        bool flat = IsFlat(o);
        if (flat && o.BackingFile is not null) throw new CreateException("Flat image can't have backing file");
        if (flat && o.ZeroedGrain) throw new CreateException("Flat image can't enable zeroed grain");
    }

    private static bool HwVersionGiven(VmdkCreateOptions o) => o.HwVersion is not null && o.HwVersion != "undefined";

    private static string Subformat(VmdkCreateOptions o) => o.Subformat ?? "monolithicSparse";

    private static bool IsFlat(VmdkCreateOptions o) => Subformat(o) is "monolithicFlat" or "twoGbMaxExtentFlat";

    private static bool IsSplit(VmdkCreateOptions o) => Subformat(o) is "twoGbMaxExtentSparse" or "twoGbMaxExtentFlat";

    /// <summary>Creates the image; see the class summary for the steps.</summary>
    /// <exception cref="CreateException">An option QEMU refuses, or a backing file that cannot be used.</exception>
    public static async Task CreateAsync(VmdkCreateOptions o, CancellationToken ct = default)
    {
        Validate(o);
        long size = (o.Size + 511) & ~511L;
        string subformat = Subformat(o);
        bool flat = IsFlat(o), split = IsSplit(o), compress = subformat == "streamOptimized";
        string adapter = o.AdapterType ?? "ide";
        string hwVersion = o.Compat6 ? "6" : HwVersionGiven(o) ? o.HwVersion! : "4";
        string toolsVersion = o.ToolsVersion ?? "2147483647";
        int heads = adapter == "ide" ? 16 : 255;
        var (directory, prefix, postfix) = Decompose(o.Filename);
        long extentSize = split ? SplitExtentBytes : size;
        long createdSize = !split && !flat ? extentSize : 0;
        var extentLines = new StringBuilder();

        var descriptor = await CreateExtentFileAsync(o.Filename, createdSize, flat, compress, o.ZeroedGrain, o.Locking, keepOpen: true, ct).ConfigureAwait(false);
        await using (descriptor!.ConfigureAwait(false))
        {
            if (!split && !flat) AppendExtentLine(extentLines, flat, createdSize, o.Filename);
            uint parentCid = 0xffffffff;
            string parentLine = "";
            if (o.BackingFile is { } backingFile)
            {
                parentCid = await ReadParentCidAsync(o.Filename, backingFile, ct).ConfigureAwait(false);
                parentLine = $"parentFileNameHint=\"{backingFile}\"";
            }
            int index = 1;
            while (createdSize < size)
            {
                long current = Math.Min(size - createdSize, extentSize);
                string name = split ? string.Create(CultureInfo.InvariantCulture, $"{prefix}-{(flat ? 'f' : 's')}{index:000}{postfix}")
                    : $"{prefix}-flat{postfix}";
                string path = directory + name;
                await CreateExtentFileAsync(path, current, flat, compress, o.ZeroedGrain, o.Locking, keepOpen: false, ct).ConfigureAwait(false);
                AppendExtentLine(extentLines, flat, current, path);
                createdSize += current;
                index++;
            }

            uint cid = (uint)Random.Shared.NextInt64(0, 1L << 32);
            string text = string.Create(CultureInfo.InvariantCulture,
                $"# Disk DescriptorFile\nversion=1\nCID={cid:x}\nparentCID={parentCid:x}\ncreateType=\"{subformat}\"\n{parentLine}\n" +
                $"# Extent description\n{extentLines}\n# The Disk Data Base\n#DDB\n\n" +
                $"ddb.virtualHWVersion = \"{hwVersion}\"\nddb.geometry.cylinders = \"{size / (63L * heads * 512)}\"\n" +
                $"ddb.geometry.heads = \"{heads}\"\nddb.geometry.sectors = \"63\"\nddb.adapterType = \"{adapter}\"\n" +
                $"ddb.toolsVersion = \"{toolsVersion}\"\n");
            var bytes = Encoding.Latin1.GetBytes(text);
            long offset = !split && !flat ? 0x200 : 0;
            var file = (FileNode)descriptor!.Root;
            try
            {
                await file.WriteAsync(offset, bytes, WriteFlags.None, ct).ConfigureAwait(false);
                // The descriptor file is exactly its text.
                if (offset == 0) await file.TruncateAsync(bytes.Length, ct).ConfigureAwait(false);
                await file.FlushAsync(ct).ConfigureAwait(false);
            }
            catch (NativeIOException e) when (!e.Message.StartsWith("Failed to resize", StringComparison.Ordinal))
            {
                throw new NativeIOException(e.Errno, "Could not write description: " + NativeIOException.Describe(e.Errno));
            }
        }
    }

    /// <summary>vmdk_desc_add_extent: the line with the size in sectors and the file's base name.</summary>
    private static void AppendExtentLine(StringBuilder lines, bool flat, long bytes, string path)
    {
        long sectors = (bytes + 511) / 512;
        string name = Path.GetFileName(path);
        string size = sectors.ToString(CultureInfo.InvariantCulture);
        lines.Append(flat ? $"RW {size} FLAT \"{name}\" 0\n" : $"RW {size} SPARSE \"{name}\"\n");
    }

    /// <summary>filename_decompose: the directory (through the last '/', '\' or ':'), the name before its last dot, and the rest.</summary>
    internal static (string Directory, string Prefix, string Postfix) Decompose(string filename)
    {
        int cut = filename.LastIndexOf('/');
        if (cut < 0) cut = filename.LastIndexOf('\\');
        if (cut < 0) cut = filename.LastIndexOf(':');
        string directory = cut < 0 ? "" : filename[..(cut + 1)];
        string name = filename[(cut + 1)..];
        int dot = name.LastIndexOf('.');
        return dot < 0 ? (directory, name, "") : (directory, name[..dot], name[dot..]);
    }

    /// <summary>
    /// The parent's CID: the backing file (relative to the new image) opened without its own
    /// backing file, which must be a vmdk image.
    /// </summary>
    private static async Task<uint> ReadParentCidAsync(string filename, string backingFile, CancellationToken ct)
    {
        string full = Graph.BackingPath.Combine(filename, backingFile);
        DiskImage backing;
        try
        {
            backing = DiskImage.Open(ImageSource.FromFile(full), OpenFlags.NoBacking);
        }
        catch (Locking.LockConflictException e)
        {
            // qemu-img's error_report of the open's Error: the message, then the lock hint.
            throw new CreateException(e.Message, e.Hint + "\n");
        }
        catch (IOException e)
        {
            throw new CreateException(e.Message);
        }
        await using (backing.ConfigureAwait(false))
        {
            if (backing.Root is not VmdkNode parent)
                throw new CreateException($"Invalid backing file format: {backing.Root.DriverName}. Must be vmdk");
            try
            {
                var area = await parent.ReadDescriptorAreaAsync(ct).ConfigureAwait(false);
                return VmdkDescriptor.ReadCid(VmdkDescriptor.CString(area), parent: false) ?? throw new CreateException("Failed to read parent CID");
            }
            catch (NativeIOException)
            {
                throw new CreateException("Failed to read parent CID");
            }
        }
    }

    /// <summary>
    /// vmdk_create_extent: the file created as file-posix does (locked for the creation, empty),
    /// opened read-write as a protocol user, and vmdk_init_extent run on it. The descriptor
    /// (<paramref name="keepOpen"/>) stays open for its text.
    /// </summary>
    private static async Task<DiskImage?> CreateExtentFileAsync(string path, long bytes, bool flat, bool compress, bool zeroedGrain,
        LockingMode locking, bool keepOpen, CancellationToken ct)
    {
        await FileCreate.CreateAsync(path, locking, fill: null, ct).ConfigureAwait(false);
        var options = FileCreate.OpenOptions(path, locking);
        var image = DiskImage.Open(ImageSource.FromOptions(options), OpenFlags.ReadWrite | OpenFlags.Resize);
        try
        {
            await InitExtentAsync((FileNode)image.Root, bytes, flat, compress, zeroedGrain, ct).ConfigureAwait(false);
            if (keepOpen) return image;
            await image.FlushAsync(ct).ConfigureAwait(false);
        }
        catch
        {
            await image.DisposeAsync().ConfigureAwait(false);
            throw;
        }
        await image.DisposeAsync().ConfigureAwait(false);
        return null;
    }

    /// <summary>
    /// vmdk_init_extent: a flat extent is truncated to its size (file-posix then allocates the
    /// first block, as it does for every file it grows from empty); a sparse one gets its
    /// header, is grown to its first grain, and gets the redundant and primary grain
    /// directories, each pointing at its (zero) grain tables.
    /// </summary>
    private static async Task InitExtentAsync(FileNode file, long bytes, bool flat, bool compress, bool zeroedGrain, CancellationToken ct)
    {
        if (flat)
        {
            file.Truncate(bytes);
            return;
        }
        var h = VmdkSparseHeader.ForNewExtent(bytes, compress, zeroedGrain);
        var sector = h.Serialize();
        await file.WriteAsync(0, sector.AsMemory(0, 79), WriteFlags.None, ct).ConfigureAwait(false);
        file.Truncate((long)h.GrainOffset << 9);
        var layout = h.NewLayout();
        var directory = new byte[layout.DirectorySectors * 512];
        if (directory.Length == 0) return;
        void Fill(ulong firstTable)
        {
            for (ulong i = 0; i < layout.TableCount; i++)
                BinaryPrimitives.WriteUInt32LittleEndian(directory.AsSpan((int)(i * 4)), (uint)(firstTable + i * layout.TableSectors));
        }
        Fill(h.RedundantGrainDirectoryOffset + layout.DirectorySectors);
        await file.WriteAsync((long)h.RedundantGrainDirectoryOffset * 512, directory, WriteFlags.None, ct).ConfigureAwait(false);
        Fill(h.GrainDirectoryOffset + layout.DirectorySectors);
        await file.WriteAsync((long)h.GrainDirectoryOffset * 512, directory, WriteFlags.None, ct).ConfigureAwait(false);
    }
}
