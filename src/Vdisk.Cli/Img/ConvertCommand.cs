using System.CommandLine;
using Vdisk.Cli.Common;
using Vdisk.Copy;
using Vdisk.Options;
using Vdisk.Permissions;

namespace Vdisk.Cli.Img;

/// <summary>
/// <c>vdisk convert</c>: qemu-img convert, with its checks in img_convert's order (so a refused
/// command line writes nothing, and one qemu-img refuses late writes what qemu-img writes).
/// Sources are opened like qemu-img's (refusing writers), the target is created (or, with -n,
/// opened as raw unless -O says otherwise) with cache=unsafe unless -t says otherwise, and
/// filled by <see cref="ImageCopier"/>: -m requests in flight, writes in guest order unless -W;
/// zero ranges are skipped on a fresh target and explicitly zeroed on an existing one; -c
/// compresses whole clusters.
/// </summary>
internal static class ConvertCommand
{
    /// <summary>qemu-img's MAX_COROUTINES: the -m limit.</summary>
    private const int MaxCoroutines = 16;

    /// <summary>MAX_BUF_SECTORS * 512: the largest -S.</summary>
    private const long MaxSparse = 32768L * 512;

    public static Command Create()
    {
        var image = new ImageArguments(longFormat: false, format: "format of the source images (probed if not given)", imageOpts: "the source names are key=value option strings", forceShare: "open the sources read-only sharing all permissions (no conflict with their writers)");
        var format = image.Format;
        var imageOpts = image.ImageOpts;
        var forceShare = image.ForceShare;
        var outFormat = new Option<string?>("-O") { Description = "format of the target: raw (default) or qcow2" };
        var options = new Option<string[]>("-o") { Description = "target format options, key=value[,...] as for create (-o help lists them)" };
        var compress = new Option<bool>("-c") { Description = "write the target's data as compressed clusters (qcow2)" };
        var progress = new Option<bool>("-p") { Description = "show progress: \"    (xx.xx/100%)\" lines on stdout (a bar on a terminal)" };
        var quiet = new Option<bool>("-q") { Description = "quiet: no progress, only errors" };
        var noCreate = new Option<bool>("-n") { Description = "do not create the target: write into an existing image (raw unless -O), which must be large enough" };
        var sparse = new Option<string?>("-S") { Description = "zero bytes in a row (multiple of 512, up to 16M; default 4k) that become a hole in the target; 0 writes every byte" };
        var backing = new Option<string?>("-B") { Description = "backing file of the target: only what the source's top layer holds is copied" };
        var backingFormat = new Option<string?>("-F") { Description = "format of the -B backing file (required with -B)" };
        var coroutines = new Option<string?>("-m") { Description = "requests in flight, 1 to 16 (default 8)" };
        var outOfOrder = new Option<bool>("-W") { Description = "let writes happen out of guest order (faster, the target is only complete at the end)" };
        var targetImageOpts = new Option<bool>("--target-image-opts") { Description = "the target name is a key=value option string (needs -n)" };
        var targetIsZero = new Option<bool>("--target-is-zero") { Description = "the existing target (-n) already reads as zeroes: zero ranges are not written" };
        var cache = new Option<string?>("-t") { Description = "cache mode of the target: unsafe (default), writeback, writethrough, none, directsync" };
        var srcCache = new Option<string?>("-T") { Description = "cache mode of the sources: writeback (default), writethrough, none, directsync, unsafe" };
        var rate = new Option<string?>("-r") { Description = "limit the writes to the target to this many bytes per second (k, M, G... suffixes)" };
        var copyRange = new Option<bool>("-C") { Description = "try copy offloading (accepted; vdisk copies the same way with or without it)" };
        var salvage = new Option<bool>("--salvage") { Description = "copy what cannot be read as zeroes (a warning names each unreadable sector) instead of failing" };
        var bitmaps = new Option<bool>("--bitmaps") { Description = "copy the source's persistent bitmaps into the target (qcow2 to qcow2)" };
        var skipBroken = new Option<bool>("--skip-broken-bitmaps") { Description = "with --bitmaps: leave out inconsistent bitmaps instead of failing" };
        var snapshotParam = new Option<string?>("-l") { Description = "convert an internal snapshot of the source: snapshot.id=ID[,snapshot.name=NAME], or an id or name" };
        var files = new Argument<string[]>("files") { Arity = ArgumentArity.ZeroOrMore, Description = "the source images, then the target" };
        var command = new Command("convert", "Convert or copy images like qemu-img convert");
        image.AddTo(command, withForceShare: true);
        foreach (var o in new Option[] { outFormat, options, compress, progress, quiet, noCreate, sparse, backing, backingFormat, coroutines, outOfOrder, targetImageOpts, targetIsZero, cache, srcCache, rate, copyRange, snapshotParam, salvage, bitmaps, skipBroken })
            command.Options.Add(o);
        command.Arguments.Add(files);
        command.SetAction(async (result, ct) =>
        {
            // Checks qemu-img makes while reading its command line.
            if (!ImgOptions.TryAccumulate(result.GetValue(options), out string? optionText)) return 1;
            long minSparse = 4096;
            bool explicitSparse = result.GetValue(sparse) is not null;
            if (result.GetValue(sparse) is { } s)
            {
                if (!ImgOptions.TryCvtNum("buffer size for sparse output", s, out minSparse)) return 1;
                if (minSparse % 512 != 0 || minSparse > MaxSparse)
                {
                    Stdio.Error($"Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 up to {MaxSparse}. Select 0 to disable sparse detection (fully allocates output).");
                    return 1;
                }
            }
            int parallel = 8;
            if (result.GetValue(coroutines) is { } m)
            {
                if (QemuNumber.ParseLong(m, 0, out long n) != QemuNumberStatus.Ok || n < 1 || n > MaxCoroutines)
                {
                    Stdio.Error($"Invalid number of coroutines. Allowed number of coroutines is between 1 and {MaxCoroutines}");
                    return 1;
                }
                parallel = (int)n;
            }
            if (!SnapshotChoice.TryParse(result.GetValue(snapshotParam), out var snapshot)) return 1;
            long rateLimit = 0;
            if (result.GetValue(rate) is { } r && !ImgOptions.TryCvtNum("rate limit", r, out rateLimit)) return 1;

            bool skipCreate = result.GetValue(noCreate);
            bool compressed = result.GetValue(compress);
            bool copyOffload = result.GetValue(copyRange);
            bool targetOpts = result.GetValue(targetImageOpts);
            bool zeroTarget = result.GetValue(targetIsZero);
            string? outFmt = result.GetValue(outFormat) ?? (targetOpts ? null : "raw");
            string? check = (compressed && copyOffload) ? "Cannot enable copy offloading when -c is used"
                : (explicitSparse && copyOffload) ? "Cannot enable copy offloading when -S is used"
                : (copyOffload && result.GetValue(salvage)) ? "Cannot use copy offloading in salvaging mode"
                : (targetOpts && !skipCreate) ? "--target-image-opts requires use of -n flag"
                : (skipCreate && optionText is not null) ? "-o has no effect when skipping image creation"
                : (zeroTarget && !skipCreate) ? "--target-is-zero requires use of -n flag"
                : null;
            if (check is not null)
            {
                Stdio.Error(check);
                return 1;
            }
            var names = result.GetValue(files) ?? [];
            string? target = names.Length >= 2 ? names[^1] : null;
            if (optionText is not null && QemuOpts.HasHelpOption(optionText))
            {
                if (outFmt is null)
                {
                    Stdio.Error("Option help requires a format be specified");
                    return 1;
                }
                return ImgOptions.PrintCreateHelp(outFmt, target) ? 0 : 1;
            }
            if (target is null)
            {
                Stdio.Error("Must specify image file name");
                return 1;
            }
            if (result.GetValue(srcCache) is { } sc && !ImgOptions.IsCacheMode(sc))
            {
                Stdio.Error($"Invalid source cache option: {sc}");
                return 1;
            }

            bool copyBitmaps = result.GetValue(bitmaps), skipBrokenBitmaps = result.GetValue(skipBroken);
            if (skipBrokenBitmaps && !copyBitmaps)
            {
                Stdio.Error("Use of --skip-broken-bitmaps requires --bitmaps");
                return 1;
            }

            using var meter = new ImgProgress(result.GetValue(progress) && !result.GetValue(quiet), 1.0f, "Converting");
            meter.Print(0, 100);
            var flags = ImgOpen.WithForceShare(AccessProfiles.ImgConvertSource, result.GetValue(forceShare));
            var sources = new List<DiskImage>();
            try
            {
                foreach (var name in names[..^1])
                {
                    var img = ImgOpen.Open(result, name, result.GetValue(format), result.GetValue(imageOpts), flags);
                    if (img is null) return 1;
                    sources.Add(img);
                }
                if (snapshot is not null && !await snapshot.LoadAsync(sources, ct)) return 1;
                // bdrv_nb_sectors: lengths in whole sectors.
                long totalSectors = sources.Sum(x => (x.Length + 511) / 512);

                CreateOptions? create = null;
                if (!skipCreate)
                {
                    if (ImgOptions.FormatProblem(outFmt!, create: true) is { } problem)
                    {
                        Stdio.Error(problem);
                        return 1;
                    }
                    create = new CreateOptions(target, outFmt!);
                    if (optionText is not null && create.Options.Parse(optionText) is { } parseError)
                    {
                        ImgOptions.Error(parseError);
                        return 1;
                    }
                    create.Options.Set("size", ImgOptions.Invariant(totalSectors * 512));
                    if (result.GetValue(backing) is { } b && create.Options.Set("backing_file", b) is not null)
                    {
                        Stdio.Error($"Backing file not supported for file format '{outFmt}'");
                        return 1;
                    }
                    if (result.GetValue(backingFormat) is { } bf && create.Options.Set("backing_fmt", bf) is not null)
                    {
                        Stdio.Error($"Backing file format not supported for file format '{outFmt}'");
                        return 1;
                    }
                }
                string? targetBacking = create?.BackingFile ?? result.GetValue(backing);
                if (zeroTarget && targetBacking is not null)
                {
                    // qemu-img 7.2 leaves its status at success here: it refuses, but exits 0.
                    Stdio.Error("Cannot use --target-is-zero when the destination image has a backing file");
                    return 0;
                }
                if (sources.Count > 1 && targetBacking is not null)
                {
                    Stdio.Error("Having a backing file for the target makes no sense when concatenating multiple input images");
                    return 1;
                }
                if (create is { BackingFile: not null, BackingFormat: null })
                {
                    Stdio.Error("Use of backing file requires explicit backing format");
                    return 1;
                }
                if (compressed && create is not null)
                {
                    string? why = Graph.BlockDrivers.Find(outFmt!)?.SupportsCompressedWrites != true ? "Compression not supported for this file format"
                        : create.Options.GetBool("encryption") == true || create.Options.Contains("encrypt.format") ? "Compression and encryption not supported at the same time"
                        : create.Options.Get("preallocation") is { } pa && pa != "off" ? "Compression and preallocation not supported at the same time"
                        : null;
                    if (why is not null)
                    {
                        Stdio.Error(why);
                        return 1;
                    }
                }
                if (copyBitmaps && !CheckBitmaps(sources, skipBrokenBitmaps)) return 1;
                if (create is not null && !await ImgOpen.TryCreateTargetAsync(result, create, $"{target}: error while converting {outFmt}", ct)) return 1;

                // qemu-img convert opens its target with cache=unsafe unless -t says otherwise.
                string cacheMode = result.GetValue(cache) ?? "unsafe";
                if (!ImgOptions.IsCacheMode(cacheMode))
                {
                    Stdio.Error($"Invalid cache option: {cacheMode}");
                    return 1;
                }
                var targetFlags = OpenFlags.ReadWrite;
                if (minSparse != 0) targetFlags |= OpenFlags.Unmap;
                if (cacheMode == "unsafe") targetFlags |= OpenFlags.NoFlush;
                using var dest = ImgOpen.Open(result, target, targetOpts ? null : outFmt, targetOpts, targetFlags, openOptions: create?.OpenOptions());
                if (dest is null) return 1;
                if (copyBitmaps && !dest.Root.SupportsPersistentBitmaps)
                {
                    Stdio.Error($"Format driver '{dest.Root.DriverName}' does not support bitmaps");
                    return 1;
                }
                // A format that takes only compressed writes (stream-optimized vmdk) gets -c implied.
                if (dest.Root.RequiresCompressedWrites) compressed = true;
                if (compressed && !dest.SupportsCompressedWrites)
                {
                    Stdio.Error("Compression not supported for this file format");
                    return 1;
                }
                if (compressed && dest.Root.CompressedWriteUnit <= 0)
                {
                    // bdrv_get_info without one cluster size (vmdk extents of different kinds).
                    Stdio.Error("invalid cluster size");
                    return 1;
                }
                if (skipCreate && (dest.Length + 511) / 512 < totalSectors)
                {
                    Stdio.Error("output file is smaller than input file");
                    return 1;
                }
                // A fresh target reads as zeroes only without a backing file: with one, zero
                // ranges of the source must be written as zeroes or the backing data shows through.
                var copier = new ImageCopier(sources, dest, new CopyOptions
                {
                    TargetIsZero = (!skipCreate && targetBacking is null && dest.Root.HasZeroInit) || zeroTarget,
                    Compress = compressed,
                    MinSparse = minSparse,
                    TopOnly = targetBacking is not null,
                    Parallel = parallel,
                    OutOfOrder = result.GetValue(outOfOrder),
                    RateLimit = rateLimit,
                    Salvage = result.GetValue(salvage),
                    // warn_report unless -q.
                    SalvageWarning = result.GetValue(quiet) ? null : Stdio.Warning,
                });
                var failure = await copier.RunAsync(percent => meter.Print((float)percent, 0), ct);
                if (failure is null)
                {
                    if (copyBitmaps && !CopyBitmaps(sources[0].Root, dest.Root, skipBrokenBitmaps)) return 1;
                    meter.Print(100, 0);
                    return 0;
                }
                string step = failure.Step switch
                {
                    CopyStep.BlockStatus => "error while reading block status at offset",
                    CopyStep.Read => "error while reading at byte",
                    _ => "error while writing at byte",
                };
                Stdio.Error($"{step} {failure.Offset}: {Stdio.Describe(failure.Error)}");
                return 1;
            }
            finally
            {
                meter.End();
                foreach (var img in sources) await img.DisposeAsync();
            }
        });
        return command;
    }

    /// <summary>convert_check_bitmaps: one source that stores bitmaps, none of them inconsistent unless skipped.</summary>
    private static bool CheckBitmaps(List<DiskImage> sources, bool skipBroken)
    {
        if (sources.Count > 1)
        {
            Stdio.Error("Copying bitmaps only possible with single source");
            return false;
        }
        var source = sources[0].Root;
        if (!source.SupportsPersistentBitmaps)
        {
            Stdio.Error("Source lacks bitmap support");
            return false;
        }
        if (!skipBroken && source.DirtyBitmaps.FirstOrDefault(b => b.Persistent && b.Inconsistent) is { } broken)
        {
            Stdio.Error($"Cannot copy inconsistent bitmap '{broken.Name}'");
            Stdio.ErrorRaw("Try --skip-broken-bitmaps, or use 'qemu-img bitmap --remove' to delete it\n");
            return false;
        }
        return true;
    }

    /// <summary>convert_copy_bitmaps: each persistent bitmap of the source, with its granularity, enabled state and bits.</summary>
    private static bool CopyBitmaps(Graph.BlockNode source, Graph.BlockNode target, bool skipBroken)
    {
        foreach (var bitmap in source.DirtyBitmaps.Where(b => b.Persistent).ToList())
        {
            if (skipBroken && bitmap.Inconsistent)
            {
                Stdio.Warning($"Skipping inconsistent bitmap '{bitmap.Name}'");
                continue;
            }
            Graph.DirtyBitmap copy;
            try
            {
                copy = target.AddPersistentBitmap(bitmap.Name, bitmap.Granularity, disabled: !bitmap.Enabled);
            }
            catch (InvalidOperationException e)
            {
                Stdio.Error($"Failed to create bitmap {bitmap.Name}: {e.Message}");
                return false;
            }
            try
            {
                copy.MergeFrom(bitmap);
            }
            catch (InvalidOperationException e)
            {
                Stdio.Error($"Failed to populate bitmap {bitmap.Name}: {e.Message}");
                target.RemovePersistentBitmap(copy);
                return false;
            }
        }
        return true;
    }
}
