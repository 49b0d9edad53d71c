using System.CommandLine;
using Vdisk.Cli.Common;
using Vdisk.Permissions;

namespace Vdisk.Cli.Img;

/// <summary>
/// <c>vdisk dd</c>: qemu-img dd. Operands <c>if=</c>, <c>of=</c>, <c>bs=</c> (default 512),
/// <c>count=</c>, <c>skip=</c>; the output (format <c>-O</c>, raw by default) is created anew
/// with the size qemu-img 7.2 gives it (count blocks, less the skipped ones) and written block
/// by block.
/// </summary>
internal static class DdCommand
{
    public static Command Create()
    {
        var image = new ImageArguments(longFormat: false, format: "format of the input (probed if not given)",
            imageOpts: "the input is a key=value option string");
        var outFormat = new Option<string?>("-O") { Description = "format of the output (default raw)" };
        var operands = new Argument<string[]>("operands") { Arity = ArgumentArity.ZeroOrMore, Description = "if=INPUT of=OUTPUT [bs=BYTES] [count=BLOCKS] [skip=BLOCKS]" };
        var command = new Command("dd", "Copy part of an image into a new one like qemu-img dd");
        image.AddTo(command);
        command.Options.Add(outFormat);
        command.Arguments.Add(operands);
        command.SetAction(async (result, ct) =>
        {
            string? input = null, output = null;
            long blockSize = 512, count = 0, skip = 0;
            bool haveCount = false, haveSkip = false;
            foreach (var operand in result.GetValue(operands) ?? [])
            {
                int eq = operand.IndexOf('=');
                string key = eq < 0 ? operand : operand[..eq];
                if (eq < 0 || key is not ("bs" or "count" or "if" or "of" or "skip"))
                {
                    Stdio.Error($"unrecognized operand {key}");
                    return 1;
                }
                string value = operand[(eq + 1)..];
                switch (key)
                {
                    case "bs":
                        if (!ImgOptions.TryCvtNum("bs", value, out blockSize, 1, int.MaxValue)) return 1;
                        break;
                    case "count":
                        if (!ImgOptions.TryCvtNum("count", value, out count)) return 1;
                        haveCount = true;
                        break;
                    case "skip":
                        if (!ImgOptions.TryCvtNum("skip", value, out skip)) return 1;
                        haveSkip = true;
                        break;
                    case "if": input = value; break;
                    default: output = value; break;
                }
            }
            if (input is null || output is null)
            {
                Stdio.Error("Must specify both input and output files");
                return 1;
            }
            using var source = ImgOpen.Open(result, input, result.GetValue(image.Format), result.GetValue(image.ImageOpts),
                ImgOpen.WithForceShare(AccessProfiles.ImgRead, result.GetValue(image.ForceShare)));
            if (source is null) return 1;
            string outFmt = result.GetValue(outFormat) ?? "raw";
            if (ImgOptions.FormatProblem(outFmt, create: true) is { } problem)
            {
                // qemu-img dd says only this for any format it cannot find.
                Stdio.Error(CreateOptionLists.QemuFormats.Contains(outFmt) ? problem : "Unknown file format");
                return 1;
            }

            long size = source.Length;
            if (haveCount && count <= long.MaxValue / blockSize && count * blockSize < size) size = count * blockSize;
            // qemu-img 7.2 sizes the output as the input (or count blocks) less the skipped part,
            // and reads from the skip offset up to that same size.
            bool skipPastEnd = haveSkip && (skip > long.MaxValue / blockSize || size < blockSize * skip);
            var create = new CreateOptions(output, outFmt);
            create.Options.Set("size", ImgOptions.Invariant(skipPastEnd ? 0 : size - blockSize * skip));
            if (!await ImgOpen.TryCreateTargetAsync(result, create, $"{output}: error while creating output image", ct)) return 1;
            using var target = ImgOpen.Open(result, output, outFmt, imageOpts: false, AccessProfiles.ImgModify, openOptions: create.OpenOptions());
            if (target is null) return 1;

            long inPos = blockSize * skip;
            if (skipPastEnd)
            {
                // Like dd(1): a warning and an empty output.
                Stdio.Error($"{input}: cannot skip to specified offset");
                inPos = size;
            }
            var buffer = new byte[blockSize];
            for (long outPos = 0; inPos < size;)
            {
                int bytes = (int)Math.Min(blockSize, size - inPos);
                try
                {
                    await source.ReadAsync(inPos, buffer.AsMemory(0, bytes), ct);
                }
                catch (IOException e)
                {
                    Stdio.Error($"error while reading from input image file: {Stdio.Describe(e) ?? e.Message}");
                    return 1;
                }
                inPos += bytes;
                try
                {
                    await target.WriteAsync(outPos, buffer.AsMemory(0, bytes), Graph.WriteFlags.None, ct);
                }
                catch (IOException e)
                {
                    Stdio.Error($"error while writing to output image file: {Stdio.Describe(e) ?? e.Message}");
                    return 1;
                }
                outPos += bytes;
            }
            await target.FlushAsync(ct);
            return 0;
        });
        return command;
    }
}
