using System.CommandLine;
using Vdisk.Cli.Common;
using Vdisk.Options;
using Vdisk.Permissions;

namespace Vdisk.Cli.Info;

/// <summary><c>vdisk info</c>: qemu-img info (human or JSON), opened with qemu-img's flags for info.</summary>
internal static class InfoCommand
{
    public const string Name = "info";

    public static Command Create()
    {
        var image = new ImageArguments();
        var output = new OutputOption();
        var chain = new Option<bool>("--backing-chain") { Description = "show every image of the backing chain" };
        var files = new Argument<string[]>("filename") { Arity = ArgumentArity.ZeroOrMore, Description = "image file, json: filename, or option string with --image-opts" };
        var command = new Command(Name, "Show an image's format and size like qemu-img info");
        image.AddTo(command);
        output.AddTo(command);
        command.Options.Add(chain);
        command.Arguments.Add(files);
        command.SetAction(result => Run(new InfoRequest(
            result.GetValue(files) ?? [],
            result.GetValue(image.Format),
            result.GetValue(image.ImageOpts),
            result.GetValue(image.ForceShare),
            result.GetValue(output.Option),
            result.GetValue(chain),
            LockWaitOption.Of(result),
            ClusterOption.Settings(result))));
        return command;
    }

    /// <summary>What an info run was asked for, however its command line was read (<see cref="OneShotCommandLine"/>).</summary>
    public sealed record InfoRequest(
        string[] Filenames, string? Format, bool ImageOpts, bool ForceShare, string? Output, bool BackingChain,
        Locking.LockWaitOptions? Wait, Locking.Cluster.ClusterLockSettings? Cluster);

    public static int Run(InfoRequest request)
    {
        // img_info counts its operands before it reads any option's value.
        var names = request.Filenames;
        if (names.Length != 1) return Img.ImgOptions.ErrorExit("Expecting one image file name");
        if (OutputOption.IsJson(request.Output) is not bool json) return 1;
        string fmt = json ? "json" : "human";
        string filename = names[0];
        string current = filename;
        var flags = AccessProfiles.ImgInfo;
        if (request.ForceShare) flags |= OpenFlags.ForceShare;
        try
        {
            var source = ImageArguments.Source(filename, request.Format, request.ImageOpts);
            if ((flags & OpenFlags.ForceShare) != 0 && source.RefusesForceShare)
            {
                Stdio.Error("--force-share/-U conflicts with image options");
                return 1;
            }
            var infos = new List<ImageInfo>();
            var seen = new HashSet<string>();
            while (true)
            {
                using (var disk = Img.ImgOpen.Run(request.Wait, () => DiskImage.Open(source, flags, graph: new Graph.BlockGraph { ClusterLocks = request.Cluster })))
                {
                    var info = ImageInfo.Collect(disk.Root);
                    infos.Add(info);
                    if (request.BackingChain && info.FullBackingFilename is null && info.BackingFilename is { } named)
                    {
                        // collect_image_info_list: a chain that cannot be followed is an error, and nothing is printed.
                        Stdio.Error($"Could not determine absolute backing filename, but backing filename '{named}' present");
                        return 1;
                    }
                    if (!request.BackingChain || info.FullBackingFilename is null) break;
                    seen.Add(Path.GetFullPath(disk.Root.Filename));
                    if (!seen.Add(Path.GetFullPath(info.FullBackingFilename)))
                    {
                        Stdio.Out.Flush();
                        Stdio.Error($"Backing file '{info.FullBackingFilename}' creates an infinite loop.");
                        return 1;
                    }
                    current = info.FullBackingFilename;
                    source = ImageSource.FromFile(current, info.BackingFormat);
                }
            }
            if (fmt == "json")
            {
                Stdio.Out.Write(request.BackingChain
                    ? Vdisk.Output.QemuJsonObject.ToPrettyJson(infos.Select(i => i.ToJsonObject()).ToList()) + "\n"
                    : infos[0].ToJson() + "\n");
            }
            else
            {
                for (int i = 0; i < infos.Count; i++)
                {
                    if (i > 0) Stdio.Out.Write('\n');
                    Stdio.Out.Write(ImageInfoText.Human(infos[i]));
                }
            }
            Stdio.Out.Flush();
            return 0;
        }
        catch (Exception e) when (Stdio.Describe(e) is { } text)
        {
            Stdio.Error($"Could not open '{current}': {text}");
            return 1;
        }
    }
}
