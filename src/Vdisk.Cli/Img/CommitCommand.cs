using System.CommandLine;
using Vdisk.Cli.Common;
using Vdisk.Drivers.Qcow2;
using Vdisk.Graph;
using Vdisk.Options;
using Vdisk.Permissions;

namespace Vdisk.Cli.Img;

/// <summary>
/// <c>vdisk commit</c>: qemu-img commit into the immediate backing file. The top is opened
/// read-write with its backing opened read-write too (QEMU reopens it so), the top's allocated
/// ranges are copied down, and the top is emptied unless -d (or -b) is given.
/// </summary>
internal static class CommitCommand
{
    public static Command Create()
    {
        var format = new Option<string?>("-f");
        var baseName = new Option<string?>("-b");
        var keep = new Option<bool>("-d");
        var progress = new Option<bool>("-p");
        var quiet = new Option<bool>("-q");
        var cache = new Option<string?>("-t");
        var rate = new Option<string?>("-r");
        var imageOpts = new Option<bool>("--image-opts");
        var file = new Argument<string>("filename");
        var command = new Command("commit", "Commit an overlay's changes into its backing file like qemu-img commit");
        foreach (var o in new Option[] { format, baseName, keep, progress, quiet, cache, rate, imageOpts }) command.Options.Add(o);
        command.Arguments.Add(file);
        command.SetAction(async (result, ct) =>
        {
            string filename = result.GetValue(file)!;
            DiskImage disk;
            try
            {
                ImageSource source;
                if (result.GetValue(imageOpts)) source = ImageSource.FromImageOptions(filename);
                else source = ImageSource.FromFile(filename, result.GetValue(format));
                var options = source.Options is not null ? OptionTree.Crumple(source.Options.Clone()) : null;
                var dict = options ?? new OptionDict();
                if (options is null)
                {
                    var f = new OptionDict();
                    f.Set("filename", filename);
                    dict.Set("file", f);
                    if (result.GetValue(format) is { } fmt) dict.Set("driver", fmt);
                }
                disk = ImgOpen.Run(result, () => DiskImage.Open(ImageSource.FromOptions(dict), AccessProfiles.ImgCommit));
            }
            catch (Exception e) when (Stdio.Describe(e) is { } text)
            {
                Stdio.Error($"Could not open '{filename}': {text}");
                return 1;
            }
            await using (disk)
            {
                if (disk.Root is not Qcow2Node top || top.Backing is null)
                {
                    Stdio.Error("Image does not have a backing file");
                    return 1;
                }
                var baseNode = top.Backing;
                if (result.GetValue(baseName) is { } b && b != top.Header.BackingFile && b != top.FullBackingFilename && Path.GetFullPath(b) != Path.GetFullPath(baseNode.Filename))
                {
                    Stdio.Error($"Did not find '{b}' in the backing chain of '{filename}'");
                    return 1;
                }
                try
                {
                    // As qemu-img commit: the base was opened read-only as a backing file and is
                    // now reopened read-write (a new descriptor, locked after the test).
                    Reopen.SetReadOnly(baseNode, readOnly: false);
                }
                catch (Exception e) when (Stdio.Describe(e) is { } text)
                {
                    Stdio.Error(text);
                    return 1;
                }
                try
                {
                    await ProgressBar.RunAsync(result.GetValue(progress) && !result.GetValue(quiet), "Committing", async report =>
                    {
                        if (baseNode.Length < top.Length) await baseNode.TruncateAsync(top.Length, ct);
                        var buffer = new byte[2 << 20];
                        long pos = 0;
                        while (pos < top.Length)
                        {
                            var st = await top.GetBlockStatusAsync(pos, Math.Min(buffer.Length, top.Length - pos), ct);
                            int n = (int)st.Length;
                            if ((st.Flags & BlockStatusFlags.Allocated) != 0)
                            {
                                if ((st.Flags & BlockStatusFlags.Zero) != 0) await baseNode.WriteZeroesAsync(pos, n, ZeroFlags.MayUnmap, ct);
                                else
                                {
                                    await top.ReadAsync(pos, buffer.AsMemory(0, n), ct);
                                    await baseNode.WriteAsync(pos, buffer.AsMemory(0, n), WriteFlags.None, ct);
                                }
                            }
                            pos += n;
                            report((double)pos / top.Length);
                        }
                        await baseNode.FlushAsync(ct);
                        if (!result.GetValue(keep) && result.GetValue(baseName) is null) await top.MakeEmptyAsync(ct);
                        return 0;
                    });
                }
                catch (IOException e)
                {
                    Stdio.Error(Stdio.Describe(e) ?? e.Message);
                    return 1;
                }
            }
            if (!result.GetValue(quiet)) Stdio.Out.Write("Image committed.\n");
            Stdio.Out.Flush();
            return 0;
        });
        return command;
    }
}
