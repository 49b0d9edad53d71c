using System.CommandLine;
using Vdisk.Cli.Common;
using Vdisk.Permissions;

namespace Vdisk.Cli.Img;

/// <summary>
/// <c>vdisk snapshot</c>: qemu-img snapshot. <c>-l</c> lists the internal snapshots; <c>-c</c>,
/// <c>-a</c> and <c>-d</c> create, apply and delete them (qcow2 only, as in QEMU), opening the
/// image read-write.
/// </summary>
internal static class SnapshotCommand
{
    public static Command Create()
    {
        var image = new ImageArguments(longFormat: false);
        var list = new Option<bool>("-l") { Description = "list the internal snapshots (the default)" };
        var create = new Option<string?>("-c") { Description = "create an internal snapshot with this name" };
        var apply = new Option<string?>("-a") { Description = "revert the image to the snapshot with this id or name" };
        var delete = new Option<string?>("-d") { Description = "delete the snapshot with this name" };
        var quiet = new Option<bool>("-q") { Description = "quiet: only errors" };
        var files = new Argument<string[]>("filename") { Arity = ArgumentArity.ZeroOrMore, Description = "the image" };
        var command = new Command("snapshot", "List, create, apply or delete internal snapshots like qemu-img snapshot");
        image.AddTo(command);
        foreach (var o in new Option[] { list, create, apply, delete, quiet }) command.Options.Add(o);
        command.Arguments.Add(files);
        command.SetAction(async (result, ct) =>
        {
            int actions = (result.GetValue(list) ? 1 : 0) + (result.GetValue(create) is null ? 0 : 1)
                + (result.GetValue(apply) is null ? 0 : 1) + (result.GetValue(delete) is null ? 0 : 1);
            if (actions > 1) return ImgOptions.ErrorExit("Cannot mix '-l', '-a', '-c', '-d'");
            var names = result.GetValue(files) ?? [];
            if (names.Length != 1) return ImgOptions.ErrorExit("Expecting one image file name");
            string? createName = result.GetValue(create), applyName = result.GetValue(apply), deleteName = result.GetValue(delete);
            if (createName is not null || applyName is not null || deleteName is not null)
                return await ChangeAsync(result, image, names[0], createName, applyName, deleteName, ct);
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

    /// <summary>img_snapshot's SNAPSHOT_CREATE, SNAPSHOT_APPLY and SNAPSHOT_DELETE, with qemu-img's messages.</summary>
    private static async Task<int> ChangeAsync(ParseResult result, ImageArguments image, string filename,
        string? createName, string? applyName, string? deleteName, CancellationToken ct)
    {
        using var disk = ImgOpen.Open(result, filename, result.GetValue(image.Format), result.GetValue(image.ImageOpts),
            ImgOpen.WithForceShare(AccessProfiles.ImgModify, result.GetValue(image.ForceShare)));
        if (disk is null) return 1;
        if (createName is not null)
        {
            try
            {
                await disk.Root.CreateSnapshotAsync(createName, DateTimeOffset.UtcNow, ct);
            }
            catch (Exception e) when (Stdio.Describe(e) is not null)
            {
                int errno = e is Native.NativeIOException n ? n.Errno : Native.Errno.EIO;
                Stdio.Error($"Could not create snapshot '{createName}': -{errno} ({Native.NativeIOException.Describe(errno)})");
                return 1;
            }
            return 0;
        }
        if (applyName is not null)
        {
            try
            {
                await disk.Root.ApplySnapshotAsync(applyName, ct);
            }
            catch (Native.NativeIOException e) when (e.Errno == Native.Errno.ENOENT)
            {
                Stdio.Error($"Could not apply snapshot '{applyName}': Failed to load snapshot: {Native.NativeIOException.Describe(e.Errno)}");
                return 1;
            }
            catch (Native.NativeIOException e) when (e.Errno == Native.Errno.ENOTSUP && disk.Root.IsProbedRaw)
            {
                // bdrv_snapshot_goto's fallback reopens the format node over its file, and raw_open warns again.
                Stdio.ErrorRaw(Graph.GraphOpener.ProbedRawWarning(disk.Root.Filename) + "\n");
                Stdio.Error($"Could not apply snapshot '{applyName}': {e.Message}");
                return 1;
            }
            catch (Exception e) when (Stdio.Describe(e) is { } text)
            {
                Stdio.Error($"Could not apply snapshot '{applyName}': {text}");
                return 1;
            }
            return 0;
        }
        // qemu-img 7.2 looks the snapshot up by name only, then deletes it by id and name.
        var snapshot = ImageInfo.Collect(disk.Root).Snapshots.FirstOrDefault(s => s.Name == deleteName);
        if (snapshot is null)
        {
            Stdio.Error($"Could not delete snapshot '{deleteName}': snapshot not found");
            return 1;
        }
        try
        {
            await disk.Root.DeleteSnapshotAsync(snapshot.Id, snapshot.Name, ct);
        }
        catch (Exception e) when (Stdio.Describe(e) is { } text)
        {
            Stdio.Error($"Could not delete snapshot '{deleteName}': {text}");
            return 1;
        }
        return 0;
    }
}
