using System.CommandLine;
using System.Threading.Channels;
using Vdisk.Cli.Common;
using Vdisk.Drivers.Qcow2;
using Vdisk.Graph;
using Vdisk.Native;
using Vdisk.Permissions;

namespace Vdisk.Cli.Img;

/// <summary>
/// <c>vdisk convert</c>: qemu-img convert. Sources are opened like qemu-img's (refusing
/// writers), the target is created (or, with -n, opened) and filled by a pipeline that reads the
/// next chunk while the previous one is written; zero ranges are skipped on a fresh target and
/// explicitly zeroed on an existing one; -c compresses whole clusters.
/// </summary>
internal static class ConvertCommand
{
    private const int ChunkSize = 2 << 20;

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
            var flags = ImgOpen.WithForceShare(AccessProfiles.ImgConvertSource, result.GetValue(forceShare));
            var sources = new List<DiskImage>();
            try
            {
                foreach (var name in names[..^1])
                {
                    var img = ImgOpen.Open(name, result.GetValue(format), result.GetValue(imageOpts), flags);
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
                if (result.GetValue(backing) is null) targetFlags |= OpenFlags.NoBacking;
                using var dest = ImgOpen.Open(target, fresh || result.GetValue(outFormat) is not null ? outFmt : null, false, targetFlags);
                if (dest is null) return 1;
                if (compressed && dest.Root is not Qcow2Node)
                {
                    Stdio.Error("Compression not supported for this file format");
                    return 1;
                }
                bool zeroed = fresh || result.GetValue(targetIsZero);
                bool topOnly = result.GetValue(backing) is not null;
                var copier = new Copier(sources, dest, zeroed, compressed, minSparse, topOnly);
                int rc = await ProgressBar.RunAsync(result.GetValue(progress) && !result.GetValue(quiet), "Converting",
                    report => copier.RunAsync(report, ct));
                return rc;
            }
            finally
            {
                foreach (var img in sources) await img.DisposeAsync();
            }
        });
        return command;
    }

    private readonly record struct Chunk(long Offset, int Length, byte[]? Data, bool Zero, bool Skip);

    /// <summary>The copy loop: a reader task classifies and reads chunks; the caller writes them in order.</summary>
    private sealed class Copier(List<DiskImage> sources, DiskImage dest, bool targetZeroed, bool compressed, long minSparse, bool topOnly)
    {
        private readonly long _total = sources.Sum(s => s.Length);

        public async Task<int> RunAsync(Action<double> report, CancellationToken ct)
        {
            int cluster = dest.Root is Qcow2Node q ? q.Geometry.ClusterSize : 4096;
            var channel = Channel.CreateBounded<Chunk>(new BoundedChannelOptions(4) { SingleReader = true, SingleWriter = true });
            long readFailedAt = -1;
            Exception? readError = null;
            var reader = Task.Run(async () =>
            {
                long baseOffset = 0;
                try
                {
                    foreach (var src in sources)
                    {
                        long pos = 0;
                        while (pos < src.Length)
                        {
                            int want = (int)Math.Min(ChunkSize - (baseOffset + pos) % ChunkSize, src.Length - pos);
                            var status = await BlockChain.StatusAboveAsync(src.Root, pos, want, ct);
                            int n = (int)Math.Clamp(status.Length, 1, want);
                            bool allocatedAbove = status.Depth == 0 && (status.Flags & BlockStatusFlags.Allocated) != 0;
                            if (topOnly && !allocatedAbove)
                            {
                                await channel.Writer.WriteAsync(new Chunk(baseOffset + pos, n, null, false, Skip: true), ct);
                            }
                            else if ((status.Flags & BlockStatusFlags.Zero) != 0)
                            {
                                await channel.Writer.WriteAsync(new Chunk(baseOffset + pos, n, null, true, false), ct);
                            }
                            else
                            {
                                var data = GC.AllocateUninitializedArray<byte>(n);
                                try
                                {
                                    await src.ReadAsync(pos, data, ct);
                                }
                                catch (IOException e)
                                {
                                    readFailedAt = baseOffset + pos;
                                    readError = e;
                                    break;
                                }
                                await channel.Writer.WriteAsync(new Chunk(baseOffset + pos, n, data, false, false), ct);
                            }
                            pos += n;
                        }
                        if (readError is not null) break;
                        baseOffset += src.Length;
                    }
                }
                finally
                {
                    channel.Writer.Complete();
                }
            }, ct);

            long done = 0;
            try
            {
                await foreach (var chunk in channel.Reader.ReadAllAsync(ct))
                {
                    if (!chunk.Skip)
                    {
                        if (chunk.Zero) await WriteZeroAsync(chunk.Offset, chunk.Length, ct);
                        else await WriteDataAsync(chunk.Offset, chunk.Data!, cluster, ct);
                    }
                    done += chunk.Length;
                    report(_total == 0 ? 1 : (double)done / _total);
                }
            }
            catch (IOException e)
            {
                Stdio.Error($"error while writing at byte {done}: {Stdio.Describe(e)}");
                return 1;
            }
            await reader;
            if (readError is not null)
            {
                Stdio.Error($"error while reading at byte {readFailedAt}: {Stdio.Describe(readError)}");
                return 1;
            }
            await dest.FlushAsync(ct);
            return 0;
        }

        private async ValueTask WriteZeroAsync(long offset, long length, CancellationToken ct)
        {
            if (targetZeroed) return;
            await dest.WriteZeroesAsync(offset, length, ZeroFlags.MayUnmap, ct);
        }

        private async ValueTask WriteDataAsync(long offset, byte[] data, int cluster, CancellationToken ct)
        {
            if (compressed)
            {
                var node = (Qcow2Node)dest.Root;
                for (int pos = 0; pos < data.Length; pos += cluster)
                {
                    int n = Math.Min(cluster, data.Length - pos);
                    var piece = data.AsMemory(pos, n);
                    if (piece.Span.IndexOfAnyExcept((byte)0) < 0) { await WriteZeroAsync(offset + pos, n, ct); continue; }
                    await node.WriteCompressedAsync(offset + pos, piece, ct);
                }
                return;
            }
            if (minSparse == 0)
            {
                await dest.WriteAsync(offset, data, WriteFlags.None, ct);
                return;
            }
            // Runs of at least minSparse zero bytes (in aligned blocks) become holes.
            int block = (int)Math.Min(minSparse, int.MaxValue);
            int i = 0;
            while (i < data.Length)
            {
                int runStart = i;
                bool zero = IsZeroBlock(data, i, block);
                while (i < data.Length && IsZeroBlock(data, i, block) == zero) i = Math.Min(data.Length, i + block);
                var run = data.AsMemory(runStart, i - runStart);
                if (zero) await WriteZeroAsync(offset + runStart, run.Length, ct);
                else await dest.WriteAsync(offset + runStart, run, WriteFlags.None, ct);
            }
        }

        private static bool IsZeroBlock(byte[] data, int start, int block) =>
            data.AsSpan(start, Math.Min(block, data.Length - start)).IndexOfAnyExcept((byte)0) < 0;
    }
}
