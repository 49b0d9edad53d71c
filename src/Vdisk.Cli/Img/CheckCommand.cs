using System.CommandLine;
using Vdisk.Cli.Common;
using Vdisk.Native;
using Vdisk.Permissions;

namespace Vdisk.Cli.Img;

/// <summary><c>vdisk check</c>: qemu-img check, with -r leaks|all, --output and exit codes 0/1/2/3/63.</summary>
internal static class CheckCommand
{
    public static Command Create()
    {
        var image = new ImageArguments();
        var output = new OutputOption();
        var repair = new Option<string?>("-r") { Description = "repair: leaks (only leaked clusters) or all" };
        var quiet = new Option<bool>("-q") { Description = "quiet: only errors" };
        var srcCache = new Option<string?>("-T") { Description = "cache mode of the image: writeback (default), writethrough, none, directsync, unsafe" };
        var files = new Argument<string[]>("filename") { Arity = ArgumentArity.ZeroOrMore, Description = "the image to check" };
        var command = new Command("check", "Check an image's consistency like qemu-img check");
        image.AddTo(command);
        output.AddTo(command);
        command.Options.Add(repair);
        command.Options.Add(quiet);
        command.Options.Add(srcCache);
        command.Arguments.Add(files);
        command.SetAction(async (result, ct) =>
        {
            var mode = RepairMode.None;
            if (result.GetValue(repair) is { } r)
            {
                mode = r switch { "leaks" => RepairMode.Leaks, "all" => RepairMode.All, _ => (RepairMode)(-1) };
                if (mode < 0) return ImgOptions.ErrorExit($"Unknown option value for -r (expecting 'leaks' or 'all'): {r}");
            }
            var names = result.GetValue(files) ?? [];
            if (names.Length != 1) return ImgOptions.ErrorExit("Expecting one image file name");
            string filename = names[0];
            if (output.IsJson(result) is not bool json) return 1;
            string fmt = json ? "json" : "human";
            if (result.GetValue(srcCache) is { } sc && !ImgOptions.IsCacheMode(sc))
            {
                Stdio.Error($"Invalid source cache option: {sc}");
                return 1;
            }
            bool forceShare = result.GetValue(image.ForceShare);
            var flags = mode != RepairMode.None ? AccessProfiles.ImgCheckRepair : AccessProfiles.ImgCheck;
            flags = ImgOpen.WithForceShare(flags, forceShare);
            using var disk = ImgOpen.Open(result, filename, result.GetValue(image.Format), result.GetValue(image.ImageOpts), flags);
            if (disk is null) return 1;
            bool quietOut = result.GetValue(quiet);
            void Log(string line) => Stdio.ErrorRaw(line + "\n");
            ImageCheck check;
            try
            {
                check = await disk.CheckAsync(mode, Log, ct);
                if (check.CorruptionsFixed > 0 || check.LeaksFixed > 0)
                {
                    if (fmt == "human" && !quietOut) Stdio.Out.Write(ImageCheckText.RepairSummary(check));
                    var again = await disk.CheckAsync(RepairMode.None, Log, ct);
                    again.LeaksFixed = check.LeaksFixed;
                    again.CorruptionsFixed = check.CorruptionsFixed;
                    check = again;
                }
            }
            catch (NativeIOException e) when (e.Errno == Errno.ENOTSUP)
            {
                // img_check: a driver without bdrv_co_check.
                Stdio.Error("This image format does not support checks");
                return 63;
            }
            catch (ImageCheckException e)
            {
                Stdio.Error(e.Message);
                Stdio.Error($"Check failed: {NativeIOException.Describe(e.Errno)}");
                return 1;
            }
            catch (NativeIOException e)
            {
                Stdio.Error($"Check failed: {NativeIOException.Describe(e.Errno)}");
                return 1;
            }
            if (!quietOut) Stdio.Out.Write(fmt == "json" ? ImageCheckText.Json(check, filename, disk.Root.DriverName) + "\n" : ImageCheckText.Human(check));
            Stdio.Out.Flush();
            if (check.CheckErrors > 0)
            {
                Stdio.Error("Check failed");
                return 1;
            }
            return ImageCheckText.ExitCode(check);
        });
        return command;
    }
}
