using Vdisk.Drivers.File;
using Vdisk.Graph;
using Vdisk.Locking;
using Vdisk.Native;
using Vdisk.Options;
using Vdisk.Permissions;

namespace Vdisk.Drivers.Qcow2;

/// <summary>
/// Options of the <c>qcow2</c> format (file, backing, lazy-refcounts, cache sizes...) and the
/// opening of its backing chain: <c>backing</c> may name a node, give a nested option
/// dictionary, or be null for none; otherwise the header's backing file is opened read-only,
/// relative to the image's directory, with the format from the header (probed if absent).
/// </summary>
public sealed class Qcow2Driver : IBlockDriver
{
    [ThreadStatic] private static List<(FileIdentity? Id, string Name)>? t_chain;

    /// <inheritdoc />
    public string Name => "qcow2";

    /// <inheritdoc />
    public bool IsProtocol => false;

    /// <inheritdoc />
    public bool SupportsCompressedWrites => true;

    /// <summary>
    /// qcow2's runtime options as vdisk reads them: caches and discard passing do not change what
    /// vdisk does, but their values are checked as qcow2_update_options does; the overlap checks
    /// decide which metadata every write is checked against.
    /// </summary>
    internal sealed record RuntimeOptions(ulong? CacheSize, ulong? L2CacheSize, ulong? L2CacheEntrySize, ulong? RefcountCacheSize,
        ulong? CacheCleanInterval, bool? LazyRefcounts, string? OverlapCheck, string? OverlapTemplate,
        string? EncryptKeySecret = null, string? EncryptFormat = null, Dictionary<string, bool>? OverlapSwitches = null)
    {
        /// <summary>The overlap checks these options select.</summary>
        public Qcow2OverlapChecks OverlapChecks =>
            Qcow2OverlapCheckNames.Resolve(OverlapCheck ?? OverlapTemplate, OverlapSwitches);
    }

    /// <summary>Takes the runtime options, refusing values of the wrong type with QemuOpts' messages.</summary>
    internal static RuntimeOptions TakeRuntimeOptions(NodeOptions o)
    {
        bool? lazy = o.TakeBool("lazy-refcounts");
        o.TakeBool("pass-discard-request");
        o.TakeBool("pass-discard-snapshot");
        o.TakeBool("pass-discard-other");
        string? overlap = null, template = null;
        var overlapSwitches = new Dictionary<string, bool>();
        if (o.Has("overlap-check") && o.Dictionary["overlap-check"] is OptionDict switches)
        {
            var inner = new NodeOptions(switches);
            template = inner.TakeString("template");
            foreach (var name in Qcow2OverlapCheckNames.Switches)
            {
                if (inner.TakeBool(name) is { } on) overlapSwitches[name] = on;
            }
            o.Take("overlap-check");
        }
        else
        {
            overlap = o.TakeString("overlap-check");
        }
        var cacheSize = o.TakeSize("cache-size");
        var l2CacheSize = o.TakeSize("l2-cache-size");
        var l2EntrySize = o.TakeSize("l2-cache-entry-size");
        var refcountCacheSize = o.TakeSize("refcount-cache-size");
        var cleanInterval = o.TakeNumber("cache-clean-interval");
        string? keySecret = null, format = null;
        if (o.Has("encrypt") && o.Dictionary["encrypt"] is Options.OptionDict encrypt)
        {
            var inner = new NodeOptions(encrypt);
            keySecret = inner.TakeString("key-secret");
            format = inner.TakeString("format");
        }
        o.Take("encrypt");
        return new RuntimeOptions(cacheSize, l2CacheSize, l2EntrySize, refcountCacheSize, cleanInterval, lazy, overlap, template, keySecret, format,
            overlapSwitches);
    }

    /// <summary>
    /// qcow2_update_options_prepare's checks of the runtime options against the image
    /// (read_cache_sizes, the cache clean interval, lazy refcounts, overlap checks).
    /// </summary>
    internal static void CheckRuntimeOptions(RuntimeOptions r, int clusterSize, long virtualSize, uint version)
    {
        ulong cs = (ulong)clusterSize;
        ulong maxL2Entries = ((ulong)virtualSize + cs - 1) / cs;
        ulong maxL2Cache = (maxL2Entries * 8 + cs - 1) / cs * cs;
        ulong l2Setting = r.L2CacheSize ?? 32UL << 20;
        ulong l2Cache = Math.Min(maxL2Cache, l2Setting);
        if (r.CacheSize is { } combined)
        {
            if (r.L2CacheSize is not null && r.RefcountCacheSize is not null)
                throw new OptionException("cache-size, l2-cache-size and refcount-cache-size may not be set at the same time");
            if (r.L2CacheSize is not null && l2Setting > combined)
                throw new OptionException("l2-cache-size may not exceed cache-size");
            if ((r.RefcountCacheSize ?? 0) > combined)
                throw new OptionException("refcount-cache-size may not exceed cache-size");
            if (r.L2CacheSize is null)
            {
                ulong minRefcountCache = 4 * cs;
                l2Cache = r.RefcountCacheSize is { } rc ? combined - rc
                    : combined >= maxL2Cache + minRefcountCache ? maxL2Cache
                    : combined - Math.Min(combined, minRefcountCache);
            }
        }
        ulong entrySize = r.L2CacheEntrySize ?? (l2Cache < maxL2Cache ? Math.Min(cs, 4096) : cs);
        if (entrySize < 512 || entrySize > cs || !ulong.IsPow2(entrySize))
            throw new OptionException($"L2 cache entry size must be a power of two between 512 and the cluster size ({clusterSize})");
        if (l2Cache / entrySize > int.MaxValue) throw new OptionException("L2 cache size too big");
        if ((r.RefcountCacheSize ?? 0) / cs > int.MaxValue) throw new OptionException("Refcount cache size too big");
        if ((r.CacheCleanInterval ?? 0) > uint.MaxValue) throw new OptionException("Cache clean interval too big");
        if (r.LazyRefcounts == true && version < 3)
            throw new OptionException("Lazy refcounts require a qcow2 image with at least qemu 1.1 compatibility level");
        if (r.OverlapCheck is not null && r.OverlapTemplate is not null && r.OverlapCheck != r.OverlapTemplate)
            throw new OptionException($"Conflicting values for qcow2 options 'overlap-check' ('{r.OverlapCheck}') and 'overlap-check.template' ('{r.OverlapTemplate}')");
        string mode = r.OverlapCheck ?? r.OverlapTemplate ?? "cached";
        if (mode is not ("none" or "constant" or "cached" or "all"))
            throw new OptionException($"Unsupported value '{mode}' for qcow2 option 'overlap-check'. Allowed are any of the following: none, constant, cached, all");
    }

    /// <inheritdoc />
    public QemuOpts? CreateAmendOptions() => new(Qcow2Create.AmendOptionList);

    /// <inheritdoc />
    public IReadOnlyList<QemuOptDesc>? CreateOptionList => Qcow2Create.OptionList;

    /// <inheritdoc />
    public Task CreateAsync(CreateOptions options, CancellationToken cancellationToken = default) => Qcow2Create.CreateAsync(options, cancellationToken);

    /// <inheritdoc />
    public Task<MeasureResult> MeasureAsync(QemuOpts options, BlockNode? input, CancellationToken cancellationToken = default) =>
        Qcow2Measure.MeasureAsync(options, input, cancellationToken);

    /// <inheritdoc />
    public BlockNode Open(NodeOpenContext context)
    {
        var o = context.Options;
        var runtime = TakeRuntimeOptions(o);
        // Opened once the header says whether the image has a data file (qcow2_do_open).
        var dataFileOption = o.Take("data-file");
        bool hasBackingOption = o.Has("backing");
        var backingOption = o.Take("backing");
        var file = context.OpenChild("file");
        o.EnsureAllUsed(Name, isProtocol: false);

        var node = Qcow2Node.OpenAsync(context.NodeName, context.Flags, context.OpenFlags, file,
            encryptKeySecret: runtime.EncryptKeySecret, encryptFormat: runtime.EncryptFormat,
            openDataFile: header => OpenDataFile(context, header, dataFileOption)).GetAwaiter().GetResult();
        try
        {
            CheckRuntimeOptions(runtime, node.Geometry.ClusterSize, node.Length, node.Header.Version);
            node.OverlapChecks = runtime.OverlapChecks;
            node.UseLazyRefcounts = runtime.LazyRefcounts ?? node.Header.LazyRefcounts;
        }
        catch
        {
            node.CloseAsync().AsTask().GetAwaiter().GetResult();
            throw;
        }
        if ((context.OpenFlags & OpenFlags.NoBacking) != 0) return node;

        var identity = (file as FileNode)?.Identity;
        var chain = t_chain ??= new();
        if (chain.Any(c => identity is not null ? c.Id == identity : c.Name == file.Filename))
            throw new NativeIOException(Errno.ELOOP, $"Backing file '{chain[^1].Name}' creates an infinite loop");
        chain.Add((identity, file.Filename));
        try
        {
            OpenBacking(context, node, hasBackingOption, backingOption);
        }
        catch
        {
            node.CloseAsync().AsTask().GetAwaiter().GetResult();
            throw;
        }
        finally
        {
            chain.RemoveAt(chain.Count - 1);
        }
        return node;
    }

    /// <summary>
    /// qcow2_do_open's data file: the <c>data-file</c> option (a node name or options) or else
    /// the name in the header, opened as a file relative to the working directory, with role
    /// DATA; null when the image keeps its data in its own file. A metadata-only open (info)
    /// opens no data file, as QEMU 7.2 with the CVE-2024-4467 fix does, so that info on an
    /// untrusted image touches no other file.
    /// </summary>
    private static BlockNode? OpenDataFile(NodeOpenContext context, Qcow2Header header, OptionValue? option)
    {
        if ((context.Flags & NodeFlags.NoIo) != 0) return null;
        BlockNode? node = null;
        // A data file given in the options is opened first, whatever the header says.
        if (option is not null and not OptionScalar { Kind: ScalarKind.Null })
        {
            context.Options.Dictionary.Set("data-file", option);
            node = context.OpenChild("data-file");
        }
        if (header.HasDataFile)
        {
            if (node is null && header.DataFile is { } name)
            {
                // The name in the image is a file name, never parsed for a protocol prefix or
                // json: (QEMU 7.2 with the CVE-2024-4467 fix opens it with parse_filename off).
                var dict = new OptionDict();
                dict.Set("driver", Native.FileSystemEntry.IsDevice(name) ? Drivers.File.FileDriver.HostDeviceName : "file");
                dict.Set("filename", name);
                context.Options.Dictionary.Set("data-file", dict);
                node = context.OpenChild("data-file");
            }
            return node ?? throw new OptionException("'data-file' is required for this image");
        }
        // The opener closes what it opened when the open fails.
        if (node is not null) throw new OptionException("'data-file' can only be set for images with an external data file");
        if (header.DataFileRaw) throw new OptionException("data-file-raw requires a data file");
        return null;
    }

    private static void OpenBacking(NodeOpenContext context, Qcow2Node node, bool hasBackingOption, OptionValue? backingOption) =>
        BackingFileOpen.Open(context, node, node.Header.BackingFile, node.Header.BackingFormat, hasBackingOption, backingOption, node.AttachBacking);

}
