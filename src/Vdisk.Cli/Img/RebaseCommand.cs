using System.CommandLine;
using Vdisk.Cli.Common;
using Vdisk.Graph;
using Vdisk.Native;
using Vdisk.Permissions;

namespace Vdisk.Cli.Img;

/// <summary>
/// <c>vdisk rebase</c>: qemu-img rebase. -u rewrites the backing file name and format only; the
/// safe mode first copies into the image, in 2 MiB steps, every range it does not hold whose
/// contents differ between the old and the new backing chain (an empty -b flattens the image),
/// then changes the name, which needs -F: like qemu-img 7.2, without -F the copying is done
/// and the change refused.
/// </summary>
internal static class RebaseCommand
{
    private const int Chunk = 2 << 20;

    public static Command Create()
    {
        var image = new ImageArguments(longFormat: false, format: "format of the image (probed if not given)", imageOpts: "the file name is a key=value option string", forceShare: "open the new backing file sharing all permissions");
        var format = image.Format;
        var imageOpts = image.ImageOpts;
        var forceShare = image.ForceShare;
        var backing = new Option<string?>("-b") { Description = "the new backing file (relative to the image's directory); empty for none" };
        var backingFormat = new Option<string?>("-F") { Description = "format of the new backing file (required with a new backing file)" };
        var unsafeMode = new Option<bool>("-u") { Description = "unsafe: only rewrite the backing file name, copy nothing (the old backing file need not exist)" };
        var progress = new Option<bool>("-p") { Description = "show progress: \"    (xx.xx/100%)\" lines on stdout (a bar on a terminal)" };
        var quiet = new Option<bool>("-q") { Description = "quiet: no progress" };
        var cache = new Option<string?>("-t") { Description = "cache mode of the image: writeback (default), writethrough, none, directsync, unsafe" };
        var srcCache = new Option<string?>("-T") { Description = "cache mode of the backing files" };
        var files = new Argument<string[]>("filename") { Arity = ArgumentArity.ZeroOrMore, Description = "the image to rebase" };
        var command = new Command("rebase", "Change an image's backing file like qemu-img rebase");
        image.AddTo(command, withForceShare: true);
        foreach (var o in new Option[] { backing, backingFormat, unsafeMode, progress, quiet, cache, srcCache }) command.Options.Add(o);
        command.Arguments.Add(files);
        command.SetAction(async (result, ct) =>
        {
            var names = result.GetValue(files) ?? [];
            if (names.Length != 1) return ImgOptions.ErrorExit("Expecting one image file name");
            string filename = names[0];
            string? newBacking = result.GetValue(backing);
            bool isUnsafe = result.GetValue(unsafeMode);
            if (!isUnsafe && newBacking is null) return ImgOptions.ErrorExit("Must specify backing file (-b) or use unsafe mode (-u)");
            string? newFormat = result.GetValue(backingFormat);
            using var meter = new ImgProgress(result.GetValue(progress) && !result.GetValue(quiet), 2.0f, "Rebasing");
            meter.Print(0, 100);
            if (result.GetValue(cache) is { } c && !ImgOptions.IsCacheMode(c))
            {
                Stdio.Error($"Invalid cache option: {c}");
                return 1;
            }
            if (result.GetValue(srcCache) is { } sc && !ImgOptions.IsCacheMode(sc))
            {
                Stdio.Error($"Invalid source cache option: {sc}");
                return 1;
            }
            var flags = AccessProfiles.ImgModify | (isUnsafe ? OpenFlags.NoBacking : OpenFlags.None);
            using var disk = ImgOpen.Open(result, filename, result.GetValue(format), result.GetValue(imageOpts), flags);
            if (disk is null) return 1;
            if (newFormat is not null && !CreateOptionLists.QemuFormats.Contains(newFormat))
            {
                Stdio.Error($"Invalid format name: '{newFormat}'");
                return 1;
            }
            bool hasNewBacking = !string.IsNullOrEmpty(newBacking);
            try
            {
                if (!isUnsafe)
                {
                    DiskImage? opened = null;
                    BlockNode? newChain = null;
                    BlockNode? prefix = null;
                    if (hasNewBacking)
                    {
                        string full = BackingPath.Combine(disk.Root.Filename, newBacking!);
                        prefix = FindInChain(disk.Root, full);
                        if (prefix is null)
                        {
                            try
                            {
                                var backingFlags = ImgOpen.WithForceShare(OpenFlags.None, result.GetValue(forceShare));
                                opened = ImgOpen.Run(result, () => DiskImage.Open(ImageSource.FromFile(full, newFormat), backingFlags, graph: ClusterOption.Graph(result)));
                            }
                            catch (Exception e) when (Stdio.Describe(e) is { } text)
                            {
                                Stdio.Error($"Could not open new backing file '{newBacking}': {text}");
                                return 1;
                            }
                            newChain = opened.Root;
                        }
                        else
                        {
                            newChain = prefix;
                        }
                    }
                    using (opened)
                    {
                        string? failure = await CopyDifferencesAsync(disk, newChain, prefix, meter, ct);
                        if (failure is not null)
                        {
                            Stdio.Error(failure);
                            return 1;
                        }
                    }
                }
            }
            catch (IOException e)
            {
                Stdio.Error($"Could not change the backing file to '{newBacking}': {Stdio.Describe(e)}");
                return 1;
            }
            // bdrv_change_backing_file; qemu-img reports its failure and still prints 100%.
            string? refusal = null;
            if (!disk.Root.CanChangeBackingFile) refusal = "Operation not supported";
            else if (hasNewBacking && newFormat is null) refusal = "backing format must be specified";
            else
            {
                try
                {
                    await disk.ChangeBackingFileAsync(hasNewBacking ? newBacking : null, hasNewBacking ? newFormat : null, ct);
                }
                catch (IOException e)
                {
                    refusal = Stdio.Describe(e);
                }
            }
            if (refusal is not null) Stdio.Error($"Could not change the backing file to '{newBacking}': {refusal}");
            meter.Print(100, 0);
            return refusal is null ? 0 : 1;
        });
        return command;
    }

    /// <summary>The backing chain image below the top that is <paramref name="path"/> (rebasing onto an image of the chain).</summary>
    private static BlockNode? FindInChain(BlockNode top, string path)
    {
        for (var node = BlockChain.BackingOf(top); node is not null; node = BlockChain.BackingOf(node))
            if (Path.GetFullPath(node.Filename) == Path.GetFullPath(path)) return node;
        return null;
    }

    /// <summary>
    /// img_rebase's safe mode: for each range the image does not hold (and, onto an image of
    /// its own chain, that the images in between hold), old and new backing contents are
    /// compared sector by sector and differing runs written into the image (as zeroes past
    /// the end of the old backing file). Returns the error to report, or null.
    /// </summary>
    private static async Task<string?> CopyDifferencesAsync(DiskImage disk, BlockNode? newChain, BlockNode? prefix, ImgProgress meter, CancellationToken ct)
    {
        var top = disk.Root;
        var oldChain = BlockChain.BackingOf(top);
        long size = disk.Length;
        long oldSize = oldChain?.Length ?? 0, newSize = newChain?.Length ?? 0;
        float step = size == 0 ? 0 : 100f / (size / Math.Min(size, Chunk));
        var oldData = new byte[Chunk];
        var newData = new byte[Chunk];
        // img_rebase asks the image's own layer for at most one buffer from each offset; the walk
        // answers the same from the extent holding it.
        await using var walk = disk.ExtentsAsync(0, size, ExtentScope.Node, cancellationToken: ct).GetAsyncEnumerator(ct);
        Extent extent = default;
        for (long offset = 0; offset < size;)
        {
            long n;
            try
            {
                while (extent.End <= offset)
                {
                    if (!await walk.MoveNextAsync()) throw new InvalidOperationException($"The block-status walk ended at {offset}");
                    extent = walk.Current;
                }
                if ((extent.Flags & BlockStatusFlags.Allocated) != 0)
                {
                    offset = extent.End;
                    continue;
                }
                n = Math.Min(Chunk, extent.End - offset);
                // Past the old backing file's end the image read zeroes whatever the images in
                // between hold, so those zeroes must be written even onto an image of the chain.
                if (prefix is not null && offset < oldSize)
                {
                    n = Math.Min(n, oldSize - offset);
                    var between = oldChain is null ? new BlockStatus(n, BlockStatusFlags.None)
                        : await BlockChain.AllocatedAboveAsync(oldChain, prefix, offset, n, ct);
                    if (between.Length <= 0) throw new NativeIOException(Errno.EIO, BlockExtents.UnexpectedEnd);
                    n = Math.Min(between.Length, n);
                    if ((between.Flags & BlockStatusFlags.Allocated) == 0)
                    {
                        offset += n;
                        continue;
                    }
                }
            }
            catch (IOException e)
            {
                return $"error while reading image metadata: {Stdio.Describe(e)}";
            }
            bool oldIsZero = offset >= oldSize;
            if (oldIsZero)
            {
                oldData.AsSpan(0, (int)n).Clear();
            }
            else
            {
                n = Math.Min(n, oldSize - offset);
                try
                {
                    await oldChain!.ReadAsync(offset, oldData.AsMemory(0, (int)n), ct);
                }
                catch (IOException)
                {
                    return "error while reading from old backing file";
                }
            }
            if (newChain is null || offset >= newSize)
            {
                newData.AsSpan(0, (int)n).Clear();
            }
            else
            {
                n = Math.Min(n, newSize - offset);
                try
                {
                    await newChain.ReadAsync(offset, newData.AsMemory(0, (int)n), ct);
                }
                catch (IOException)
                {
                    return "error while reading from new backing file";
                }
            }
            for (long written = 0; written < n;)
            {
                bool differ = CompareBuffers(oldData.AsSpan((int)written, (int)(n - written)), newData.AsSpan((int)written, (int)(n - written)), out long run);
                if (differ)
                {
                    try
                    {
                        if (oldIsZero) await disk.WriteZeroesAsync(offset + written, run, ZeroFlags.None, ct);
                        else await disk.WriteAsync(offset + written, oldData.AsMemory((int)written, (int)run), WriteFlags.None, ct);
                    }
                    catch (IOException e)
                    {
                        return $"Error while writing to COW image: {Stdio.Describe(e)}";
                    }
                }
                written += run;
            }
            meter.Print(step, 100);
            offset += n;
        }
        await disk.FlushAsync(ct);
        return null;
    }

    /// <summary>
    /// compare_buffers: whether the first 512-byte sector differs, and how many bytes from the
    /// start (whole sectors, or the rest) share that state.
    /// </summary>
    private static bool CompareBuffers(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b, out long run)
    {
        static int Sector(int i, int length) => Math.Min(512, length - i);
        bool differ = !a[..Sector(0, a.Length)].SequenceEqual(b[..Sector(0, b.Length)]);
        int pos = Sector(0, a.Length);
        while (pos < a.Length)
        {
            int len = Sector(pos, a.Length);
            if (!a.Slice(pos, len).SequenceEqual(b.Slice(pos, len)) != differ) break;
            pos += len;
        }
        run = pos;
        return differ;
    }
}
