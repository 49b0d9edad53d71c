using System.CommandLine;
using Vdisk.Cli.Common;
using Vdisk.Drivers.Qcow2;
using Vdisk.Graph;
using Vdisk.Permissions;

namespace Vdisk.Cli.Img;

/// <summary>
/// <c>vdisk rebase</c>: -u rewrites the backing file name and format only; the safe mode first
/// copies into the image every unallocated cluster whose contents differ between the old and
/// the new backing chain (an empty -b flattens the image).
/// </summary>
internal static class RebaseCommand
{
    public static Command Create()
    {
        var format = new Option<string?>("-f");
        var backing = new Option<string?>("-b");
        var backingFormat = new Option<string?>("-F");
        var unsafeMode = new Option<bool>("-u");
        var progress = new Option<bool>("-p");
        var quiet = new Option<bool>("-q");
        var forceShare = new Option<bool>("--force-share", "-U");
        var cache = new Option<string?>("-t");
        var srcCache = new Option<string?>("-T");
        var imageOpts = new Option<bool>("--image-opts");
        var file = new Argument<string>("filename");
        var command = new Command("rebase", "Change an image's backing file like qemu-img rebase");
        foreach (var o in new Option[] { format, backing, backingFormat, unsafeMode, progress, quiet, forceShare, cache, srcCache, imageOpts }) command.Options.Add(o);
        command.Arguments.Add(file);
        command.SetAction(async (result, ct) =>
        {
            string filename = result.GetValue(file)!;
            string? newBacking = result.GetValue(backing);
            if (newBacking is null)
            {
                Stdio.Error("Expecting one image file name");
                return 1;
            }
            if (newBacking.Length == 0) newBacking = null;
            string? newFormat = result.GetValue(backingFormat);
            bool isUnsafe = result.GetValue(unsafeMode);
            var flags = AccessProfiles.ImgModify | (isUnsafe ? OpenFlags.NoBacking : OpenFlags.None);
            using var disk = ImgOpen.Open(result, filename, result.GetValue(format), result.GetValue(imageOpts), flags);
            if (disk is null) return 1;
            if (disk.Root is not Qcow2Node node)
            {
                Stdio.Error($"Could not change the backing file to '{newBacking}': Operation not supported");
                return 1;
            }
            try
            {
                if (!isUnsafe)
                {
                    DiskImage? target = null;
                    if (newBacking is not null)
                    {
                        string full = Qcow2Driver.CombineBackingPath(node.Filename, newBacking);
                        target = ImgOpen.Open(result, full, newFormat, false, ImgOpen.WithForceShare(OpenFlags.None, result.GetValue(forceShare)));
                        if (target is null) return 1;
                        newFormat ??= target.Root.DriverName;
                    }
                    using (target)
                    {
                        await ProgressBar.RunAsync(result.GetValue(progress) && !result.GetValue(quiet), "Rebasing",
                            report => CopyDifferencesAsync(disk, node, target, report, ct));
                    }
                }
                else if (newBacking is not null && newFormat is null)
                {
                    Stdio.Error($"Could not change the backing file to '{newBacking}': backing format must be specified");
                    return 1;
                }
                await node.ChangeBackingFileAsync(newBacking, newFormat, ct);
            }
            catch (IOException e)
            {
                Stdio.Error($"Could not change the backing file to '{newBacking}': {Stdio.Describe(e)}");
                return 1;
            }
            return 0;
        });
        return command;
    }

    private static async Task<int> CopyDifferencesAsync(DiskImage disk, Qcow2Node node, DiskImage? target, Action<double> report, CancellationToken ct)
    {
        int cluster = node.Geometry.ClusterSize;
        var oldData = new byte[cluster];
        var newData = new byte[cluster];
        for (long pos = 0; pos < disk.Length; pos += cluster)
        {
            int n = (int)Math.Min(cluster, disk.Length - pos);
            var st = await node.GetBlockStatusAsync(pos, n, ct);
            if ((st.Flags & BlockStatusFlags.Allocated) != 0) continue;
            await disk.ReadAsync(pos, oldData.AsMemory(0, n), ct);
            long available = target is null ? 0 : Math.Clamp(target.Length - pos, 0, n);
            if (available > 0) await target!.ReadAsync(pos, newData.AsMemory(0, (int)available), ct);
            newData.AsSpan((int)available, n - (int)available).Clear();
            if (!oldData.AsSpan(0, n).SequenceEqual(newData.AsSpan(0, n)))
                await disk.WriteAsync(pos, oldData.AsMemory(0, n), WriteFlags.None, ct);
            report((double)pos / disk.Length);
        }
        await disk.FlushAsync(ct);
        return 0;
    }
}
