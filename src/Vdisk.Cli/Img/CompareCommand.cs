using System.CommandLine;
using Vdisk.Cli.Common;
using Vdisk.Graph;
using Vdisk.Permissions;

namespace Vdisk.Cli.Img;

/// <summary>
/// <c>vdisk compare</c>: qemu-img compare (exit 0 identical, 1 different, 2 open error, 4 read
/// error), walking both images by block status in img_compare's steps: ranges both read as
/// zeroes are skipped, ranges both hold are read and compared (2 MiB at a time), a range one
/// holds must read as zeroes; past the shorter image, the longer one must read as zeroes.
/// </summary>
internal static class CompareCommand
{
    private const int Chunk = 2 << 20;

    public static Command Create()
    {
        var image = new ImageArguments(longFormat: false, format: "format of the first image (probed if not given)", imageOpts: "the file names are key=value option strings", forceShare: "open the images sharing all permissions (no conflict with their writers)");
        var fmt1 = image.Format;
        var imageOpts = image.ImageOpts;
        var forceShare = image.ForceShare;
        var fmt2 = new Option<string?>("-F") { Description = "format of the second image (default: probed, as img_compare does)" };
        var strict = new Option<bool>("-s") { Description = "strict: images of different sizes or allocation differ" };
        var quiet = new Option<bool>("-q") { Description = "quiet: only the exit code tells" };
        var progress = new Option<bool>("-p") { Description = "show progress: \"    (xx.xx/100%)\" lines on stdout (a bar on a terminal)" };
        var srcCache = new Option<string?>("-T") { Description = "cache mode of the images: writeback (default), writethrough, none, directsync, unsafe" };
        var files = new Argument<string[]>("image1 image2") { Arity = ArgumentArity.ZeroOrMore, Description = "the two images" };
        var command = new Command("compare", "Compare two images' contents like qemu-img compare");
        image.AddTo(command, withForceShare: true);
        foreach (var o in new Option[] { fmt2, strict, quiet, progress, srcCache }) command.Options.Add(o);
        command.Arguments.Add(files);
        command.SetAction(async (result, ct) =>
        {
            var names = result.GetValue(files) ?? [];
            if (names.Length != 2) return ImgOptions.ErrorExit("Expecting two image file names");
            bool q = result.GetValue(quiet);
            using var meter = new ImgProgress(result.GetValue(progress) && !q, 2.0f, "Comparing");
            if (result.GetValue(srcCache) is { } sc && !ImgOptions.IsCacheMode(sc))
            {
                Stdio.Error($"Invalid source cache option: {sc}");
                return 2;
            }
            var flags = ImgOpen.WithForceShare(AccessProfiles.ImgRead, result.GetValue(forceShare));
            using var a = ImgOpen.Open(result, names[0], result.GetValue(fmt1), result.GetValue(imageOpts), flags);
            if (a is null) return 2;
            using var b = ImgOpen.Open(result, names[1], result.GetValue(fmt2), result.GetValue(imageOpts), flags);
            if (b is null) return 2;
            var comparison = new Comparison(a, names[0], b, names[1], result.GetValue(strict), q, meter);
            try
            {
                return await comparison.RunAsync(ct);
            }
            finally
            {
                // As qemu-img: the verdict is printed before the progress line ends.
                meter.End();
                Stdio.Out.Flush();
            }
        });
        return command;
    }

    /// <summary>One img_compare run.</summary>
    private sealed class Comparison(DiskImage a, string nameA, DiskImage b, string nameB, bool strict, bool quiet, ImgProgress meter)
    {
        private readonly byte[] _bufA = new byte[Chunk];
        private readonly byte[] _bufB = new byte[Chunk];

        private void Say(string s)
        {
            if (!quiet) Stdio.Out.Write(s + "\n");
        }

        public async Task<int> RunAsync(CancellationToken ct)
        {
            long sizeA = a.Length, sizeB = b.Length;
            long total = Math.Min(sizeA, sizeB);
            long progressBase = Math.Max(sizeA, sizeB);
            meter.Print(0, 100);
            if (strict && sizeA != sizeB)
            {
                Say("Strict mode: Image size mismatch!");
                return 1;
            }
            // img_compare asks both images for the status at each offset; the walks answer the
            // same from the extent holding it (its rest from there).
            await using var walkA = new StatusCursor(a, nameA, ct);
            await using var walkB = new StatusCursor(b, nameB, ct);
            for (long offset = 0; offset < total;)
            {
                if (await walkA.AtAsync(offset) is not { } sa) return 3;
                if (await walkB.AtAsync(offset) is not { } sb) return 3;
                bool allocatedA = (sa.Flags & BlockStatusFlags.Allocated) != 0, allocatedB = (sb.Flags & BlockStatusFlags.Allocated) != 0;
                long chunk = Math.Min(Math.Min(sa.Length, sb.Length), total - offset);
                if (strict && !SameStatus(sa, offset + sa.Length >= sizeA, sb, offset + sb.Length >= sizeB))
                {
                    Say($"Strict mode: Offset {offset} block status mismatch!");
                    return 1;
                }
                if ((sa.Flags & BlockStatusFlags.Zero) != 0 && (sb.Flags & BlockStatusFlags.Zero) != 0)
                {
                    // Both read as zeroes.
                }
                else if (allocatedA == allocatedB)
                {
                    if (allocatedA)
                    {
                        chunk = Math.Min(chunk, Chunk);
                        if (await ReadAsync(a, nameA, offset, _bufA, (int)chunk, ct) is { } ra) return ra;
                        if (await ReadAsync(b, nameB, offset, _bufB, (int)chunk, ct) is { } rb) return rb;
                        for (int s = 0; s < chunk; s += 512)
                        {
                            int len = (int)Math.Min(512, chunk - s);
                            if (!_bufA.AsSpan(s, len).SequenceEqual(_bufB.AsSpan(s, len)))
                            {
                                Say($"Content mismatch at offset {offset + s}!");
                                return 1;
                            }
                        }
                    }
                }
                else
                {
                    chunk = Math.Min(chunk, Chunk);
                    var (img, name) = allocatedA ? (a, nameA) : (b, nameB);
                    if (await CheckEmptyAsync(img, name, offset, (int)chunk, ct) is { } r) return r;
                }
                offset += chunk;
                meter.Print((float)chunk / progressBase * 100, 100);
            }
            if (sizeA != sizeB)
            {
                Say("Warning: Image size mismatch!");
                var (longer, walk) = sizeA > sizeB ? (a, walkA) : (b, walkB);
                string name = sizeA > sizeB ? nameA : nameB;
                long end = longer.Length;
                for (long offset = total; offset < end;)
                {
                    if (await walk.AtAsync(offset) is not { } st) return 3;
                    long chunk = Math.Min(st.Length, end - offset);
                    if ((st.Flags & BlockStatusFlags.Allocated) != 0)
                    {
                        chunk = Math.Min(chunk, Chunk);
                        if (await CheckEmptyAsync(longer, name, offset, (int)chunk, ct) is { } r) return r;
                    }
                    offset += chunk;
                    meter.Print((float)chunk / progressBase * 100, 100);
                }
            }
            Say("Images are identical.");
            return 0;
        }

        /// <summary>One image's block-status walk through its chain, read at increasing offsets.</summary>
        private sealed class StatusCursor(DiskImage img, string name, CancellationToken ct) : IAsyncDisposable
        {
            private readonly IAsyncEnumerator<Extent> _walk = img.ExtentsAsync(0, img.Length, ExtentScope.Chain, cancellationToken: ct).GetAsyncEnumerator(ct);
            private Extent _current;

            /// <summary>The status from <paramref name="offset"/> to the end of its extent, or null after qemu-img's error.</summary>
            public async Task<BlockStatus?> AtAsync(long offset)
            {
                try
                {
                    while (_current.End <= offset)
                    {
                        if (!await _walk.MoveNextAsync()) throw new InvalidOperationException($"The block-status walk of {name} ended at {offset}");
                        _current = _walk.Current;
                    }
                }
                catch (IOException)
                {
                    Stdio.Error($"Sector allocation test failed for {name}");
                    return null;
                }
                return _current.Status with { Length = _current.End - offset, HostOffset = _current.HostOffset + (offset - _current.Offset) };
            }

            public ValueTask DisposeAsync() => _walk.DisposeAsync();
        }

        /// <summary>Strict mode's status comparison: the same flags, offset validity and end-of-image flag in both.</summary>
        private static bool SameStatus(BlockStatus x, bool xAtEnd, BlockStatus y, bool yAtEnd) =>
            x.Flags == y.Flags && x.HostOffset.HasValue == y.HostOffset.HasValue && xAtEnd == yAtEnd;

        private static async Task<int?> ReadAsync(DiskImage img, string name, long offset, byte[] buffer, int length, CancellationToken ct)
        {
            try
            {
                await img.ReadAsync(offset, buffer.AsMemory(0, length), ct);
                return null;
            }
            catch (IOException e)
            {
                Stdio.ErrorOvertakingStdout($"Error while reading offset {offset} of {name}: {Stdio.Describe(e)}");
                return 4;
            }
        }

        /// <summary>check_empty_sectors: the range must read as zeroes; else the first non-zero sector is reported.</summary>
        private async Task<int?> CheckEmptyAsync(DiskImage img, string name, long offset, int length, CancellationToken ct)
        {
            if (await ReadAsync(img, name, offset, _bufA, length, ct) is { } r) return r;
            for (int s = 0; s < length; s += 512)
            {
                if (_bufA.AsSpan(s, Math.Min(512, length - s)).ContainsAnyExcept((byte)0))
                {
                    Say($"Content mismatch at offset {offset + s}!");
                    return 1;
                }
            }
            return null;
        }
    }
}
