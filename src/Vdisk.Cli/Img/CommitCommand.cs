using System.CommandLine;
using Vdisk.Cli.Common;
using Vdisk.Copy;
using Vdisk.Graph;
using Vdisk.Native;
using Vdisk.Options;
using Vdisk.Permissions;

namespace Vdisk.Cli.Img;

/// <summary>
/// <c>vdisk commit</c>: qemu-img commit. The base is the immediate backing file, or the image
/// of the chain that -b names; everything the layers above it hold (the top and any images in
/// between) is copied into it, read through the top. The top is opened read-write with the
/// base reopened read-write too, as QEMU does; the top is emptied afterwards unless -d or -b
/// is given. The chain's backing file names are left as they are.
/// </summary>
internal static class CommitCommand
{
    private const int Chunk = 2 << 20;

    public static Command Create()
    {
        var image = new ImageArguments(longFormat: false, format: "format of the image (probed if not given)", imageOpts: "the file name is a key=value option string");
        var format = image.Format;
        var imageOpts = image.ImageOpts;
        var baseName = new Option<string?>("-b") { Description = "commit down to this image of the backing chain (implies -d)" };
        var keep = new Option<bool>("-d") { Description = "do not empty the image after committing it" };
        var progress = new Option<bool>("-p") { Description = "show progress: \"    (xx.xx/100%)\" lines on stdout (a bar on a terminal)" };
        var quiet = new Option<bool>("-q") { Description = "quiet: no progress and no \"Image committed.\"" };
        var cache = new Option<string?>("-t") { Description = "cache mode: writeback (default), writethrough, none, directsync, unsafe" };
        var rate = new Option<string?>("-r") { Description = "limit the writes to the base to this many bytes per second (k, M, G... suffixes)" };
        var files = new Argument<string[]>("filename") { Arity = ArgumentArity.ZeroOrMore, Description = "the image whose changes are committed" };
        var command = new Command("commit", "Commit an overlay's changes into its backing chain like qemu-img commit");
        image.AddTo(command, withForceShare: false);
        foreach (var o in new Option[] { baseName, keep, progress, quiet, cache, rate }) command.Options.Add(o);
        command.Arguments.Add(files);
        command.SetAction(async (result, ct) =>
        {
            long rateLimit = 0;
            if (result.GetValue(rate) is { } r && !ImgOptions.TryCvtNum("rate limit", r, out rateLimit)) return 1;
            var names = result.GetValue(files) ?? [];
            if (names.Length != 1) return ImgOptions.ErrorExit("Expecting one image file name");
            string filename = names[0];
            if (result.GetValue(cache) is { } c && !ImgOptions.IsCacheMode(c))
            {
                Stdio.Error($"Invalid cache option: {c}");
                return 1;
            }
            DiskImage disk;
            try
            {
                ImageSource source;
                if (result.GetValue(imageOpts)) source = ImageSource.FromImageOptions(filename);
                else source = ImageSource.FromFile(filename, result.GetValue(format));
                var options = source.Options is not null ? OptionTree.Crumple(source.Options.Clone()) : null;
                var dict = options ?? new OptionDict();
                if (options is null)
                {
                    // A protocol prefix (blkdebug:, nbd://) chooses the protocol node, as bdrv_open does.
                    var f = new OptionDict();
                    BlockDrivers.FillProtocolOptions(f, filename);
                    dict.Set("file", f);
                    if (result.GetValue(format) is { } fmt) dict.Set("driver", fmt);
                }
                disk = ImgOpen.Run(result, () => DiskImage.Open(ImageSource.FromOptions(dict), AccessProfiles.ImgCommit, graph: ClusterOption.Graph(result)));
            }
            catch (Exception e) when (Stdio.Describe(e) is { } text)
            {
                Stdio.Error($"Could not open '{filename}': {text}");
                return 1;
            }
            string? base_ = result.GetValue(baseName);
            bool empty = !result.GetValue(keep) && base_ is null;
            string? error;
            using (var meter = new ImgProgress(result.GetValue(progress) && !result.GetValue(quiet), 1.0f, "Committing"))
            {
                meter.Print(0, 100);
                await using (disk)
                {
                    error = await CommitAsync(disk, filename, base_, empty, new RateLimiter(rateLimit), meter, ct);
                }
                meter.End();
            }
            if (error is not null)
            {
                Stdio.Error(error);
                return 1;
            }
            if (!result.GetValue(quiet)) Stdio.Out.Write("Image committed.\n");
            Stdio.Out.Flush();
            return 0;
        });
        return command;
    }

    /// <summary>Runs the commit; returns the error to report, or null.</summary>
    private static async Task<string?> CommitAsync(DiskImage disk, string filename, string? baseName, bool empty, RateLimiter rate, ImgProgress meter, CancellationToken ct)
    {
        var top = disk.Root;
        BlockNode? baseNode;
        if (baseName is not null)
        {
            baseNode = FindBackingImage(top, baseName);
            if (baseNode is null) return $"Did not find '{baseName}' in the backing chain of '{filename}'";
        }
        else
        {
            baseNode = BlockChain.BackingOf(top);
            if (baseNode is null) return "Image does not have a backing file";
        }
        try
        {
            // As qemu-img commit: the base was opened read-only as a backing file and is
            // now reopened read-write (a new descriptor, locked after the test).
            Reopen.SetReadOnly(baseNode, readOnly: false);
        }
        catch (Exception e) when (Stdio.Describe(e) is { } text)
        {
            return text;
        }
        try
        {
            long length = top.Length;
            if (baseNode.Length < length) await baseNode.TruncateAsync(length, ct);
            var buffer = new byte[Chunk];
            // commit_run asks bdrv_is_allocated_above for at most one buffer at a time.
            await foreach (var extent in BlockExtents.WalkAsync(top, 0, length, ExtentScope.AllocatedAbove, Chunk, ct, baseNode))
            {
                long pos = extent.Offset, n = extent.Length;
                bool zero = (extent.Flags & BlockStatusFlags.Zero) != 0;
                if ((extent.Flags & BlockStatusFlags.Allocated) != 0)
                {
                    await rate.WaitAsync(n, ct);
                    if (zero)
                    {
                        await baseNode.WriteZeroesAsync(pos, n, ZeroFlags.MayUnmap, ct);
                    }
                    else
                    {
                        await top.ReadAsync(pos, buffer.AsMemory(0, (int)n), ct);
                        await baseNode.WriteAsync(pos, buffer.AsMemory(0, (int)n), WriteFlags.None, ct);
                    }
                }
                pos += n;
                meter.Print((float)(100.0 * pos / length), 0);
            }
            await baseNode.FlushAsync(ct);
            meter.Print(100, 0);
        }
        catch (IOException e)
        {
            // run_block_job: the commit job's error.
            return $"Block job failed: {Stdio.Describe(e) ?? e.Message}";
        }
        if (empty)
        {
            try
            {
                await disk.MakeEmptyAsync(ct);
            }
            catch (NativeIOException e) when (e.Errno == Errno.ENOTSUP)
            {
                // img_commit leaves a top that its format cannot empty as it is.
            }
            catch (IOException e)
            {
                return $"Failed to empty {filename}: {Stdio.Describe(e) ?? e.Message}";
            }
        }
        return null;
    }

    /// <summary>
    /// bdrv_find_backing_image: the image of the chain below an overlay whose backing file name,
    /// resolved against the overlay's directory, is the same file as <paramref name="name"/>
    /// resolved the same way.
    /// </summary>
    private static BlockNode? FindBackingImage(BlockNode top, string name)
    {
        for (var node = top; BlockChain.BackingOf(node) is { } below; node = below)
        {
            if (node.FullBackingFilename is not { } backingFull) continue;
            string wanted = BackingPath.Combine(node.Filename, name);
            if (SameFile(wanted, backingFull)) return below;
        }
        return null;
    }

    private static bool SameFile(string a, string b)
    {
        if (Path.GetFullPath(a) == Path.GetFullPath(b)) return true;
        return Resolved(a) is { } ia && Resolved(b) is { } ib && ia == ib;

        static Vdisk.Native.FileIdentity? Resolved(string path)
        {
            try
            {
                return FileSystemEntry.IdentityOf(File.ResolveLinkTarget(path, returnFinalTarget: true)?.FullName ?? path);
            }
            catch (IOException)
            {
                return null;
            }
        }
    }
}
