using Vdisk.Cli.Common;
using Vdisk.Drivers.Vmdk;

namespace Vdisk.Cli.Img;

/// <summary>
/// qemu-img create and convert -O for vmdk: the -o list, bdrv_img_create's backing checks and
/// "Formatting" line, then <see cref="VmdkCreator"/>. Kept apart from the raw/qcow2 path so it
/// can move behind the verbs' driver-neutral create callback as it is.
/// </summary>
internal static class VmdkCreateVerb
{
    /// <summary>Parses the -o lists (and -b/-F) into <paramref name="args"/>; false after printing the error.</summary>
    public static bool TryParse(string filename, IEnumerable<string> optionLists, string? backing, string? backingFormat, long? size,
        Action<string> fail, out VmdkCreateArguments args)
    {
        args = new VmdkCreateArguments();
        if (size is long s) args.Set("size", ImgOptions.Invariant(s));
        foreach (var (key, value) in ImgOptions.ParseList(optionLists))
        {
            if (args.Set(key, value) is { } error)
            {
                fail(error);
                return false;
            }
        }
        if (backing is not null) args.Set("backing_file", backing);
        if (backingFormat is not null) args.Set("backing_fmt", backingFormat);
        return true;
    }

    /// <summary>
    /// bdrv_img_create for vmdk: the backing file checked (and its size taken when none was
    /// given), the "Formatting" line unless quiet, then the image created.
    /// </summary>
    /// <exception cref="CreateException">QEMU's refusal, with its hint.</exception>
    public static async Task CreateAsync(string filename, VmdkCreateArguments args, bool openBacking, bool quiet, CancellationToken ct)
    {
        var o = new CreateOptions { Filename = filename, Format = "vmdk", BackingFile = args.Get("backing_file"), BackingFormat = args.Get("backing_fmt") };
        if (args.Has("size") && ImgOptions.TryParseSize(args.Get("size")!, out long given)) o.Size = given;
        await ImageCreator.ResolveBackingAsync(o, openBacking, ct);
        if (o.Size is null) throw new CreateException("Image creation needs a size parameter");
        if (!args.Has("size")) args.Set("size", ImgOptions.Invariant(o.Size.Value));
        if (!quiet)
        {
            Stdio.Out.Write($"Formatting '{filename}', fmt=vmdk {args.Print()}\n");
            Stdio.Out.Flush();
        }
        await ImgOpen.RunAsync(token => VmdkCreator.CreateAsync(args.ToOptions(filename, CreateCommand.DefaultLocking), token), ct);
    }
}
