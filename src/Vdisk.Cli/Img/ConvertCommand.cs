using System.CommandLine;
using Vdisk.Cli.Common;
using Vdisk.Copy;
using Vdisk.Drivers.Qcow2;
using Vdisk.Graph;
using Vdisk.Native;
using Vdisk.Permissions;

namespace Vdisk.Cli.Img;

/// <summary>
/// <c>vdisk convert</c>: qemu-img convert. Sources are opened like qemu-img's (refusing
/// writers), the target is created (or, with -n, opened) with cache=unsafe unless -t says
/// otherwise, and filled by <see cref="ImageCopier"/>: -m requests in flight, writes in guest
/// order unless -W; zero ranges are skipped on a fresh target and explicitly zeroed on an
/// existing one; -c compresses whole clusters.
/// </summary>
internal static class ConvertCommand
{
    /// <summary>qemu-img's MAX_COROUTINES: the -m limit.</summary>
    private const int MaxCoroutines = 16;

    public static Command Create()
    {
        var format = new Option<string?>("-f");
        var outFormat = new Option<string?>("-O");
        var options = new Option<string[]>("-o");
        var compress = new Option<bool>("-c");
        var progress = new Option<bool>("-p");
        var quiet = new Option<bool>("-q");
        var noCreate = new Option<bool>("-n");
        var sparse = new Option<string?>("-S");
        var forceShare = new Option<bool>("--force-share", "-U");
        var backing = new Option<string?>("-B");
        var backingFormat = new Option<string?>("-F");
        var coroutines = new Option<int?>("-m");
        var outOfOrder = new Option<bool>("-W");
        var imageOpts = new Option<bool>("--image-opts");
        var targetIsZero = new Option<bool>("--target-is-zero");
        var cache = new Option<string?>("-t");
        var srcCache = new Option<string?>("-T");
        var files = new Argument<string[]>("files") { Arity = new ArgumentArity(2, 1000) };
        var command = new Command("convert", "Convert or copy images like qemu-img convert");
        foreach (var o in new Option[] { format, outFormat, options, compress, progress, quiet, noCreate, sparse, forceShare, backing, backingFormat, coroutines, outOfOrder, imageOpts, targetIsZero, cache, srcCache })
            command.Options.Add(o);
        command.Arguments.Add(files);
        command.SetAction(async (result, ct) =>
        {
            var names = result.GetValue(files)!;
            string target = names[^1];
            string outFmt = result.GetValue(outFormat) ?? "raw";
            bool compressed = result.GetValue(compress);
            long minSparse = 4096;
            if (result.GetValue(sparse) is { } s)
            {
                if (!ImgOptions.TryParseSize(s, out minSparse))
                {
                    Stdio.Error("Invalid buffer size for sparse output specified. You may use k, M, G, T, P or E suffixes for");
                    return 1;
                }
                minSparse &= ~511L;
            }
            if (outFmt is not ("raw" or "qcow2"))
            {
                Stdio.Error($"Unknown file format '{outFmt}'");
                return 1;
            }
            if (compressed && outFmt != "qcow2")
            {
                Stdio.Error("Compression not supported for this file format");
                return 1;
            }
            int parallel = result.GetValue(coroutines) ?? 8;
            if (parallel is < 1 or > MaxCoroutines)
            {
                Stdio.Error($"Invalid number of coroutines. Allowed number of coroutines is between 1 and {MaxCoroutines}");
                return 1;
            }
            bool outOfOrderWrites = result.GetValue(outOfOrder);
            // qemu-img convert opens its target with cache=unsafe unless -t says otherwise.
            string cacheMode = result.GetValue(cache) ?? "unsafe";
            if (cacheMode is not ("none" or "off" or "writeback" or "writethrough" or "directsync" or "unsafe"))
            {
                Stdio.Error($"Invalid cache option: {cacheMode}");
                return 1;
            }
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
                long total = sources.Sum(x => x.Length);
                bool fresh = !result.GetValue(noCreate);
                if (fresh)
                {
                    var o = new CreateOptions { Filename = target, Format = outFmt, Size = total };
                    foreach (var (key, value) in ImgOptions.ParseList(result.GetValue(options) ?? []))
                    {
                        if (!CreateCommand.Apply(o, key, value, out string? error))
                        {
                            Stdio.Error($"{target}: error while converting {outFmt}: {error}");
                            return 1;
                        }
                    }
                    if (result.GetValue(backing) is { } b) o.BackingFile = b;
                    if (result.GetValue(backingFormat) is { } bf) o.BackingFormat = bf;
                    try
                    {
                        await ImageCreator.ResolveBackingAsync(o, openBacking: true, ct);
                        await ImageCreator.CreateAsync(o, ct);
                    }
                    catch (CreateException e)
                    {
                        Stdio.Error($"{target}: error while converting {outFmt}: {e.Message}");
                        return 1;
                    }
                    catch (Exception e) when (Stdio.Describe(e) is { } text)
                    {
                        Stdio.Error($"{target}: error while converting {outFmt}: {text}");
                        return 1;
                    }
                }
                var targetFlags = OpenFlags.ReadWrite | OpenFlags.Unmap;
                if (cacheMode == "unsafe") targetFlags |= OpenFlags.NoFlush;
                if (result.GetValue(backing) is null) targetFlags |= OpenFlags.NoBacking;
                using var dest = ImgOpen.Open(result, target, fresh || result.GetValue(outFormat) is not null ? outFmt : null, false, targetFlags);
                if (dest is null) return 1;
                if (compressed && dest.Root is not Qcow2Node)
                {
                    Stdio.Error("Compression not supported for this file format");
                    return 1;
                }
                // A fresh target reads as zeroes only without a backing file (-B): with one, zero
                // ranges of the source must be written as zeroes or the backing data shows through.
                bool zeroed = (fresh && result.GetValue(backing) is null) || result.GetValue(targetIsZero);
                bool topOnly = result.GetValue(backing) is not null;
                var copier = new ImageCopier(sources, dest, new CopyOptions
                {
                    TargetIsZero = zeroed,
                    Compress = compressed,
                    MinSparse = minSparse,
                    TopOnly = topOnly,
                    Parallel = parallel,
                    OutOfOrder = outOfOrderWrites,
                });
                var failure = await ProgressBar.RunAsync(result.GetValue(progress) && !result.GetValue(quiet), "Converting",
                    report => copier.RunAsync(report, ct));
                if (failure is null) return 0;
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
                foreach (var img in sources) await img.DisposeAsync();
            }
        });
        return command;
    }
}
