using System.CommandLine;
using Vdisk.Cli.Common;
using Vdisk.Graph;
using Vdisk.Permissions;

namespace Vdisk.Cli.Img;

/// <summary><c>vdisk resize</c>: qemu-img resize, with +N/-N and --shrink; opened read-write with RESIZE.</summary>
internal static class ResizeCommand
{
    public static Command Create()
    {
        var image = new ImageArguments(longFormat: false, format: "format of the image (probed if not given)", imageOpts: "the file name is a key=value option string");
        var format = image.Format;
        var imageOpts = image.ImageOpts;
        var shrink = new Option<bool>("--shrink") { Description = "allow making the image smaller (data past the new end is lost)" };
        var prealloc = new Option<string?>("--preallocation") { Description = "allocate the grown part: off (default), metadata, falloc, full" };
        var quiet = new Option<bool>("-q") { Description = "quiet: no \"Image resized.\"" };
        var args = new Argument<string[]>("filename size") { Arity = ArgumentArity.ZeroOrMore, Description = "the image and its new size: N, +N or -N (k, M, G... suffixes)" };
        var command = new Command("resize", "Change an image's virtual size like qemu-img resize");
        image.AddTo(command, withForceShare: false);
        foreach (var o in new Option[] { shrink, prealloc, quiet }) command.Options.Add(o);
        command.Arguments.Add(args);
        command.SetAction(async (result, ct) =>
        {
            var positional = result.GetValue(args) ?? [];
            if (positional.Length < 2)
            {
                // qemu-img takes the size off the end before parsing the rest.
                if (result.Tokens.Count(t => t.Type is not (System.CommandLine.Parsing.TokenType.Command or System.CommandLine.Parsing.TokenType.DoubleDash)) < 2)
                    return ImgOptions.ErrorExit("Not enough arguments");
                return ImgOptions.ErrorExit("Expecting image file name and size");
            }
            if (positional.Length > 2) return ImgOptions.ErrorExit("Expecting image file name and size");
            string text = positional[1];
            int relative = text.StartsWith('+') ? 1 : text.StartsWith('-') ? -1 : 0;
            var sizeOption = new Vdisk.Options.QemuOpts([new Vdisk.Options.QemuOptDesc("size", Vdisk.Options.QemuOptType.Size, "Virtual disk size")]);
            if (sizeOption.Set("size", relative != 0 ? text[1..] : text) is { } sizeError)
            {
                ImgOptions.Error(sizeError);
                return 1;
            }
            long n = unchecked((long)sizeOption.GetNumber("size")!.Value);
            var mode = Preallocation.Off;
            if (result.GetValue(prealloc) is { } p)
            {
                Preallocation? m = p switch { "off" => Preallocation.Off, "metadata" => Preallocation.Metadata, "falloc" => Preallocation.Falloc, "full" => Preallocation.Full, _ => null };
                if (m is null)
                {
                    Stdio.Error($"Invalid preallocation mode '{p}'");
                    return 1;
                }
                mode = m.Value;
            }
            using var disk = ImgOpen.Open(result, positional[0], result.GetValue(format), result.GetValue(imageOpts), AccessProfiles.ImgResize);
            if (disk is null) return 1;
            long current = disk.Length;
            long total = relative == 0 ? n : unchecked(current + relative * n);
            if (total <= 0)
            {
                Stdio.Error("New image size must be positive");
                return 1;
            }
            if (total <= current && mode != Preallocation.Off)
            {
                Stdio.Error("Preallocation can only be used for growing images");
                return 1;
            }
            if (total < current && !result.GetValue(shrink))
            {
                Stdio.Error("Use the --shrink option to perform a shrink operation.");
                Stdio.Error("warning: Shrinking an image will delete all data beyond the shrunken image's end. Before performing such an operation, make sure there is no important data there.");
                return 1;
            }
            try
            {
                await disk.TruncateAsync(total, mode, ct);
                await disk.FlushAsync(ct);
            }
            catch (IOException e)
            {
                Stdio.Error(Stdio.Describe(e) ?? e.Message);
                return 1;
            }
            if (!result.GetValue(quiet)) Stdio.Out.Write("Image resized.\n");
            Stdio.Out.Flush();
            return 0;
        });
        return command;
    }
}
