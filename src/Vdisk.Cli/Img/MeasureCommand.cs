using System.CommandLine;
using Vdisk.Cli.Common;
using Vdisk.Graph;
using Vdisk.Output;
using Vdisk.Permissions;

namespace Vdisk.Cli.Img;

/// <summary>
/// <c>vdisk measure</c>: qemu-img measure for raw and qcow2 targets, with img_measure's checks in
/// its order: arguments, the input image, the target format, its options, then the driver's own.
/// </summary>
internal static class MeasureCommand
{
    public static Command Create()
    {
        var image = new ImageArguments(longFormat: false);
        var output = new OutputOption();
        var outFormat = new Option<string?>("-O") { Description = "format of the image to measure for: raw (default) or qcow2" };
        var options = new Option<string[]>("-o") { Description = "its create options, key=value[,...] (cluster_size, compat, refcount_bits, preallocation, backing_file...)" };
        var size = new Option<string?>("--size") { Description = "measure a new empty image of this virtual size instead of an input image" };
        var files = new Argument<string[]>("filename") { Arity = ArgumentArity.ZeroOrMore, Description = "the image whose contents the new image would hold" };
        var command = new Command("measure", "Compute the size a new image needs, like qemu-img measure");
        image.AddTo(command);
        output.AddTo(command);
        command.Options.Add(outFormat);
        command.Options.Add(options);
        command.Options.Add(size);
        command.Arguments.Add(files);
        command.SetAction(async (result, ct) =>
        {
            // qemu-img checks these while reading its command line, so the first one given fails first.
            bool outputFirst = FirstPosition(result, "--output") < FirstPosition(result, "--size");
            if (outputFirst && output.IsJson(result) is null) return 1;
            if (!ImgOptions.TryAccumulate(result.GetValue(options), out string? optionText)) return 1;
            long? sizeArg = null;
            if (result.GetValue(size) is { } sizeText)
            {
                if (!ImgOptions.TryCvtNum("image size", sizeText, out long s)) return 1;
                sizeArg = s;
            }
            if (output.IsJson(result) is not bool asJson) return 1;
            var names = result.GetValue(files) ?? [];
            string? filename = names.Length == 1 ? names[0] : null;
            string? check = names.Length > 1 ? "At most one filename argument is allowed."
                : filename is null && (result.GetValue(image.ImageOpts) || result.GetValue(image.Format) is not null) ? "--image-opts, -f, and -l require a filename argument."
                : filename is not null && sizeArg is not null ? "--size N cannot be used together with a filename."
                : filename is null && sizeArg is null ? "Either --size N or one filename must be specified."
                : null;
            if (check is not null)
            {
                Stdio.Error(check);
                return 1;
            }
            using var disk = filename is null ? null : ImgOpen.Open(result, filename, result.GetValue(image.Format), result.GetValue(image.ImageOpts),
                ImgOpen.WithForceShare(AccessProfiles.ImgRead, result.GetValue(image.ForceShare)));
            if (filename is not null && disk is null) return 1;

            string target = result.GetValue(outFormat) ?? "raw";
            if (!CreateOptionLists.QemuFormats.Contains(target))
            {
                Stdio.Error($"Unknown file format '{target}'");
                return 1;
            }
            if (!CreateOptionLists.QemuCreatableFormats.Contains(target))
            {
                Stdio.Error($"Format driver '{target}' does not support image creation");
                return 1;
            }
            // The format's create options and always the file protocol's.
            var opts = CreateOptionLists.ForFormat(target, withProtocol: true);
            if (opts is null)
            {
                // Formats qemu-img knows but vdisk does not write: the same refusal as for
                // QEMU's formats without size measurement, except luks (which has it).
                Stdio.Error(target == "luks" ? "vdisk does not support the 'luks' format" : $"Block driver '{target}' does not support size measurement");
                return 1;
            }
            if (optionText is not null && opts.Parse(optionText) is { } parseError)
            {
                ImgOptions.Error(parseError);
                Stdio.Error($"Invalid options for file format '{target}'");
                return 1;
            }
            if (sizeArg is long given) opts.Set("size", ImgOptions.Invariant(given));
            MeasureResult measured;
            try
            {
                measured = await BlockDrivers.Find(target)!.MeasureAsync(opts, disk?.Root, ct);
            }
            catch (IOException e)
            {
                Stdio.Error(Stdio.Describe(e) ?? e.Message);
                return 1;
            }
            if (asJson)
            {
                // QEMU's JSON output puts the optional bitmaps member first.
                var json = new QemuJsonObject();
                if (measured.BitmapsSize is long bitmaps) json.Add("bitmaps", bitmaps);
                json.Add("required", measured.Required).Add("fully-allocated", measured.FullyAllocated);
                Stdio.Out.Write(json.ToPrettyJson() + "\n");
            }
            else
            {
                Stdio.Out.Write($"required size: {measured.Required}\nfully allocated size: {measured.FullyAllocated}\n");
                if (measured.BitmapsSize is long bitmaps) Stdio.Out.Write($"bitmaps size: {bitmaps}\n");
            }
            Stdio.Out.Flush();
            return 0;
        });
        return command;
    }

    /// <summary>Where an option first appears on the command line (int.MaxValue when absent).</summary>
    private static int FirstPosition(ParseResult result, string name)
    {
        for (int i = 0; i < result.Tokens.Count; i++)
            if (result.Tokens[i].Type == System.CommandLine.Parsing.TokenType.Option && result.Tokens[i].Value == name) return i;
        return int.MaxValue;
    }
}
