using System.CommandLine;
using Vdisk.Cli.Common;
using Vdisk.Locking;

namespace Vdisk.Cli.Img;

/// <summary>
/// <c>vdisk create</c>: qemu-img create for raw and qcow2, in img_create's and bdrv_img_create's
/// order: option lists, help, file name, size, then the options, backing file and size checks,
/// the "Formatting" line and the creation itself.
/// </summary>
internal static class CreateCommand
{
    public static Command Create()
    {
        var format = new Option<string?>("-f") { Description = "image format: raw (default) or qcow2" };
        var backing = new Option<string?>("-b") { Description = "backing file of the new image (qcow2)" };
        var backingFormat = new Option<string?>("-F") { Description = "format of the backing file" };
        var unsafeBacking = new Option<bool>("-u") { Description = "do not open the backing file (its format and the size must then be given)" };
        var quiet = new Option<bool>("-q") { Description = "quiet: no \"Formatting\" line" };
        var options = new Option<string[]>("-o") { Description = "format options, key=value[,...] (-o help lists them)" };
        var args = new Argument<string[]>("filename [size]") { Arity = ArgumentArity.ZeroOrMore, Description = "the new image and its virtual size (k, M, G, T, P, E suffixes)" };
        var command = new Command("create", "Create a new image like qemu-img create");
        foreach (var o in new Option[] { format, backing, backingFormat, unsafeBacking, quiet, options }) command.Options.Add(o);
        command.Arguments.Add(args);
        command.SetAction(async (result, ct) =>
        {
            string fmt = result.GetValue(format) ?? "raw";
            if (!ImgOptions.TryAccumulate(result.GetValue(options), out string? optionText)) return 1;
            var positional = result.GetValue(args) ?? [];
            string? filename = positional.Length > 0 ? positional[0] : null;
            if (optionText is not null && Options.QemuOpts.HasHelpOption(optionText))
                return ImgOptions.PrintCreateHelp(fmt, filename) ? 0 : 1;
            if (filename is null) return ImgOptions.ErrorExit("Expecting image file name");
            long? size = null;
            if (positional.Length > 1)
            {
                if (!ImgOptions.TryCvtNum("image size", positional[1], out long s)) return 1;
                size = s;
            }
            if (positional.Length > 2) return ImgOptions.ErrorExit($"Unexpected argument: {positional[2]}");

            void Fail(string message, string? hint = null)
            {
                Stdio.Error($"{filename}: {message}");
                if (hint is not null) Stdio.ErrorRaw(hint);
            }
            if (ImgOptions.FormatProblem(fmt, create: true) is { } problem)
            {
                Fail(problem);
                return 1;
            }
            var o = new CreateOptions(filename, fmt) { Locking = DefaultLocking };
            if (optionText is not null && o.Options.Parse(optionText) is { } parseError)
            {
                Fail(parseError.Message, parseError.Hint);
                return 1;
            }
            if (o.Options.Contains("size") && size is not null)
            {
                Fail("The image size must be specified only once");
                return 1;
            }
            if (size is long given) o.Options.Set("size", ImgOptions.Invariant(given));
            if (result.GetValue(backing) is { } b && o.Options.Set("backing_file", b) is not null)
            {
                Fail($"Backing file not supported for file format '{fmt}'");
                return 1;
            }
            if (result.GetValue(backingFormat) is { } bf && o.Options.Set("backing_fmt", bf) is not null)
            {
                Fail($"Backing file format not supported for file format '{fmt}'");
                return 1;
            }
            try
            {
                await ImageCreator.ResolveBackingAsync(o, openBacking: !result.GetValue(unsafeBacking), ct);
                if (o.Size is null) throw new CreateException("Image creation needs a size parameter");
                if (!result.GetValue(quiet))
                {
                    Stdio.Out.Write($"Formatting '{filename}', fmt={fmt} {o.Options.Print()}\n");
                    Stdio.Out.Flush();
                }
                await ImgOpen.RunAsync(result, token => ImageCreator.CreateAsync(o, token), ct);
                return 0;
            }
            catch (CreateException e) when (e.TooLarge)
            {
                // bdrv_img_create's wording for EFBIG; the hint is there for formats with a cluster size.
                Fail($"The image size is too large for file format '{fmt}'{(fmt == "qcow2" ? " (try using a larger cluster size)" : "")}");
                return 1;
            }
            catch (CreateException e)
            {
                Fail(e.Message, e.Hint);
                return 1;
            }
            catch (Exception e) when (Stdio.Describe(e) is { } text)
            {
                Fail(text);
                return 1;
            }
        });
        return command;
    }

    internal static LockingMode DefaultLocking => LockingMode.Auto;
}
