using System.CommandLine;
using Vdisk.Cli.Common;
using Vdisk.Permissions;

namespace Vdisk.Cli.Img;

/// <summary><c>vdisk snapshot -l</c>: lists internal snapshots like qemu-img snapshot -l.</summary>
internal static class SnapshotCommand
{
    public static Command Create()
    {
        var image = new ImageArguments();
        var list = new Option<bool>("-l");
        var create = new Option<string?>("-c");
        var apply = new Option<string?>("-a");
        var delete = new Option<string?>("-d");
        var quiet = new Option<bool>("-q");
        var file = new Argument<string>("filename");
        var command = new Command("snapshot", "List internal snapshots like qemu-img snapshot -l");
        image.AddTo(command);
        foreach (var o in new Option[] { list, create, apply, delete, quiet }) command.Options.Add(o);
        command.Arguments.Add(file);
        command.SetAction(result =>
        {
            if (result.GetValue(create) is not null || result.GetValue(apply) is not null || result.GetValue(delete) is not null)
            {
                Stdio.Error("vdisk snapshot supports only -l (listing); creating, applying and deleting internal snapshots are not implemented");
                return 1;
            }
            using var disk = ImgOpen.Open(result, result.GetValue(file)!, result.GetValue(image.Format), result.GetValue(image.ImageOpts),
                ImgOpen.WithForceShare(AccessProfiles.ImgRead, result.GetValue(image.ForceShare)));
            if (disk is null) return 1;
            var info = ImageInfo.Collect(disk.Root);
            if (info.Snapshots.Count > 0)
            {
                Stdio.Out.Write("Snapshot list:\n" + SnapshotInfo.HeaderLine + "\n");
                foreach (var s in info.Snapshots) Stdio.Out.Write(s.ToLine() + "\n");
            }
            Stdio.Out.Flush();
            return 0;
        });
        return command;
    }
}
