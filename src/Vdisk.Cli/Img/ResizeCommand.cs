using System.CommandLine;
using Vdisk.Cli.Common;
using Vdisk.Drivers.Qcow2;
using Vdisk.Permissions;

namespace Vdisk.Cli.Img;

/// <summary><c>vdisk resize</c>: qemu-img resize, with +N/-N and --shrink; opened read-write with RESIZE.</summary>
internal static class ResizeCommand
{
    public static Command Create()
    {
        var format = new Option<string?>("-f");
        var shrink = new Option<bool>("--shrink");
        var prealloc = new Option<string?>("--preallocation");
        var quiet = new Option<bool>("-q");
        var imageOpts = new Option<bool>("--image-opts");
        var file = new Argument<string>("filename");
        var size = new Argument<string>("size");
        var command = new Command("resize", "Change an image's virtual size like qemu-img resize");
        foreach (var o in new Option[] { format, shrink, prealloc, quiet, imageOpts }) command.Options.Add(o);
        command.Arguments.Add(file);
        command.Arguments.Add(size);
        command.SetAction(async (result, ct) =>
        {
            string text = result.GetValue(size)!;
            int relative = text.StartsWith('+') ? 1 : text.StartsWith('-') ? -1 : 0;
            if (!ImgOptions.TryParseSize(relative != 0 ? text[1..] : text, out long n))
            {
                Stdio.Error("Invalid size specified.");
                return 1;
            }
            var mode = Preallocation.Off;
            if (result.GetValue(prealloc) is { } p)
            {
                Preallocation? m = p switch { "off" => Preallocation.Off, "metadata" => Preallocation.Metadata, "falloc" => Preallocation.Falloc, "full" => Preallocation.Full, _ => null };
                if (m is null)
                {
                    Stdio.Error($"Invalid preallocation mode: '{p}'");
                    return 1;
                }
                mode = m.Value;
            }
            using var disk = ImgOpen.Open(result, result.GetValue(file)!, result.GetValue(format), result.GetValue(imageOpts), AccessProfiles.ImgResize);
            if (disk is null) return 1;
            long current = disk.Length;
            long total = relative == 0 ? n : current + relative * n;
            if (total <= 0)
            {
                Stdio.Error("New image size must be positive");
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
                if (disk.Root is Qcow2Node q)
                {
                    if (mode != Preallocation.Off && total < current)
                    {
                        Stdio.Error("Preallocation can only be used for growing images");
                        return 1;
                    }
                    await q.ResizeAsync(total, mode, ct);
                }
                else
                {
                    await disk.TruncateAsync(total, ct);
                }
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
