using System.CommandLine;
using Vdisk.Cli.Common;
using Vdisk.Graph;
using Vdisk.Permissions;

namespace Vdisk.Cli.Img;

/// <summary><c>vdisk compare</c>: qemu-img compare (exit 0 identical, 1 different, 2 open error, 4 read error).</summary>
internal static class CompareCommand
{
    private const int Chunk = 2 << 20;

    public static Command Create()
    {
        var fmt1 = new Option<string?>("-f");
        var fmt2 = new Option<string?>("-F");
        var strict = new Option<bool>("-s");
        var quiet = new Option<bool>("-q");
        var progress = new Option<bool>("-p");
        var forceShare = new Option<bool>("--force-share", "-U");
        var imageOpts = new Option<bool>("--image-opts");
        var file1 = new Argument<string>("image1");
        var file2 = new Argument<string>("image2");
        var command = new Command("compare", "Compare two images' contents like qemu-img compare");
        foreach (var o in new Option[] { fmt1, fmt2, strict, quiet, progress, forceShare, imageOpts }) command.Options.Add(o);
        command.Arguments.Add(file1);
        command.Arguments.Add(file2);
        command.SetAction(async (result, ct) =>
        {
            var flags = ImgOpen.WithForceShare(AccessProfiles.ImgRead, result.GetValue(forceShare));
            using var a = ImgOpen.Open(result, result.GetValue(file1)!, result.GetValue(fmt1), result.GetValue(imageOpts), flags);
            if (a is null) return 2;
            using var b = ImgOpen.Open(result, result.GetValue(file2)!, result.GetValue(fmt2) ?? result.GetValue(fmt1), result.GetValue(imageOpts), flags);
            if (b is null) return 2;
            bool q = result.GetValue(quiet);
            bool isStrict = result.GetValue(strict);
            void Say(string s)
            {
                if (!q) Stdio.Out.Write(s + "\n");
            }
            try
            {
                long common = Math.Min(a.Length, b.Length);
                if (a.Length != b.Length && isStrict)
                {
                    Say("Strict mode: Image size mismatch!");
                    Stdio.Out.Flush();
                    return 1;
                }
                long? mismatch = await FirstDifferenceAsync(a, b, common, isStrict, ct);
                if (mismatch is long m)
                {
                    Say(m < 0 ? $"Strict mode: Offset {-m - 1} block status mismatch!" : $"Content mismatch at offset {m}!");
                    Stdio.Out.Flush();
                    return 1;
                }
                if (a.Length != b.Length)
                {
                    Say("Warning: Image size mismatch!");
                    var longer = a.Length > b.Length ? a : b;
                    long? nonZero = await FirstNonZeroAsync(longer, common, longer.Length, ct);
                    if (nonZero is long nz)
                    {
                        Say($"Content mismatch at offset {nz}!");
                        Stdio.Out.Flush();
                        return 1;
                    }
                }
                Say("Images are identical.");
                Stdio.Out.Flush();
                return 0;
            }
            catch (IOException e)
            {
                Stdio.Error($"Error while reading: {Stdio.Describe(e)}");
                return 4;
            }
        });
        return command;
    }

    private static async Task<long?> FirstDifferenceAsync(DiskImage a, DiskImage b, long length, bool strict, CancellationToken ct)
    {
        var bufA = new byte[Chunk];
        var bufB = new byte[Chunk];
        long pos = 0;
        while (pos < length)
        {
            long want = Math.Min(Chunk, length - pos);
            var sa = await BlockChain.StatusAboveAsync(a.Root, pos, want, ct);
            var sb = await BlockChain.StatusAboveAsync(b.Root, pos, want, ct);
            int n = (int)Math.Max(1, Math.Min(want, Math.Min(sa.Length, sb.Length)));
            bool zeroA = (sa.Flags & BlockStatusFlags.Zero) != 0, zeroB = (sb.Flags & BlockStatusFlags.Zero) != 0;
            if (strict && ((sa.Flags & BlockStatusFlags.Allocated) != 0) != ((sb.Flags & BlockStatusFlags.Allocated) != 0))
                return -pos - 1;
            if (!(zeroA && zeroB))
            {
                await a.ReadAsync(pos, bufA.AsMemory(0, n), ct);
                await b.ReadAsync(pos, bufB.AsMemory(0, n), ct);
                for (int s = 0; s < n; s += 512)
                {
                    int len = Math.Min(512, n - s);
                    if (!bufA.AsSpan(s, len).SequenceEqual(bufB.AsSpan(s, len))) return pos + s;
                }
            }
            pos += n;
        }
        return null;
    }

    private static async Task<long?> FirstNonZeroAsync(DiskImage img, long from, long to, CancellationToken ct)
    {
        var buf = new byte[Chunk];
        long pos = from;
        while (pos < to)
        {
            long want = Math.Min(Chunk, to - pos);
            var st = await BlockChain.StatusAboveAsync(img.Root, pos, want, ct);
            int n = (int)Math.Max(1, Math.Min(want, st.Length));
            if ((st.Flags & BlockStatusFlags.Zero) == 0)
            {
                await img.ReadAsync(pos, buf.AsMemory(0, n), ct);
                int i = buf.AsSpan(0, n).IndexOfAnyExcept((byte)0);
                if (i >= 0) return pos + (i & ~511);
            }
            pos += n;
        }
        return null;
    }
}
