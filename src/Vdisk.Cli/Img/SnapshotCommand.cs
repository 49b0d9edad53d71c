using System.CommandLine;
using Vdisk.Cli.Common;
using Vdisk.Permissions;

namespace Vdisk.Cli.Img;

/// <summary><c>vdisk snapshot -l</c>: lists internal snapshots like qemu-img snapshot -l.</summary>
internal static class SnapshotCommand
{
    public static Command Create()
    {
        var image = new ImageArguments(longFormat: false);
        var list = new Option<bool>("-l") { Description = "list the internal snapshots (the default)" };
        var create = new Option<string?>("-c") { Description = "create an internal snapshot (not implemented in vdisk)" };
        var apply = new Option<string?>("-a") { Description = "revert to an internal snapshot (not implemented in vdisk)" };
        var delete = new Option<string?>("-d") { Description = "delete an internal snapshot (not implemented in vdisk)" };
        var quiet = new Option<bool>("-q") { Description = "quiet: only errors" };
        var files = new Argument<string[]>("filename") { Arity = ArgumentArity.ZeroOrMore, Description = "the image" };
        var command = new Command("snapshot", "List internal snapshots like qemu-img snapshot -l");
        image.AddTo(command);
        foreach (var o in new Option[] { list, create, apply, delete, quiet }) command.Options.Add(o);
        command.Arguments.Add(files);
        command.SetAction(result =>
        {
            int actions = (result.GetValue(list) ? 1 : 0) + (result.GetValue(create) is null ? 0 : 1)
                + (result.GetValue(apply) is null ? 0 : 1) + (result.GetValue(delete) is null ? 0 : 1);
            if (actions > 1) return ImgOptions.ErrorExit("Cannot mix '-l', '-a', '-c', '-d'");
            var names = result.GetValue(files) ?? [];
            if (names.Length != 1) return ImgOptions.ErrorExit("Expecting one image file name");
            if (result.GetValue(create) is not null || result.GetValue(apply) is not null || result.GetValue(delete) is not null)
            {
                Stdio.Error("vdisk snapshot supports only -l (listing); creating, applying and deleting internal snapshots are not implemented");
                return 1;
            }
            using var disk = ImgOpen.Open(result, names[0], result.GetValue(image.Format), result.GetValue(image.ImageOpts),
                ImgOpen.WithForceShare(AccessProfiles.ImgRead, result.GetValue(image.ForceShare)));
            if (disk is null) return 1;
            var info = ImageInfo.Collect(disk.Root);
            if (info.Snapshots.Count > 0)
            {
                Stdio.Out.Write("Snapshot list:\n" + Info.ImageInfoText.SnapshotHeaderLine + "\n");
                foreach (var s in info.Snapshots) Stdio.Out.Write(Info.ImageInfoText.SnapshotLine(s) + "\n");
            }
            Stdio.Out.Flush();
            return 0;
        });
        return command;
    }
}
