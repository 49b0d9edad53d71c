using System.CommandLine;
using Vdisk.Cli.Common;
using Vdisk.Drivers.Qcow2;
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
        var repair = new Option<string?>("-r") { Description = "repair leaks or all" };
        var quiet = new Option<bool>("-q");
        var file = new Argument<string>("filename");
        var command = new Command("check", "Check an image's consistency like qemu-img check");
        image.AddTo(command);
        output.AddTo(command);
        command.Options.Add(repair);
        command.Options.Add(quiet);
        command.Arguments.Add(file);
        command.SetAction(async (result, ct) =>
        {
            string filename = result.GetValue(file)!;
            if (output.IsJson(result) is not bool json) return 1;
            string fmt = json ? "json" : "human";
            var mode = Qcow2RepairMode.None;
            if (result.GetValue(repair) is { } r)
            {
                mode = r switch { "leaks" => Qcow2RepairMode.Leaks, "all" => Qcow2RepairMode.All, _ => (Qcow2RepairMode)(-1) };
                if (mode < 0)
                {
                    Stdio.Error($"Unknown option value for -r (expecting 'leaks' or 'all'): {r}");
                    return 1;
                }
            }
            bool forceShare = result.GetValue(image.ForceShare);
            var flags = mode != Qcow2RepairMode.None ? AccessProfiles.ImgCheckRepair : AccessProfiles.ImgCheck;
            flags = ImgOpen.WithForceShare(flags, forceShare);
            using var disk = ImgOpen.Open(result, filename, result.GetValue(image.Format), result.GetValue(image.ImageOpts), flags);
            if (disk is null) return 1;
            if (disk.Root is not Qcow2Node node)
            {
                Stdio.Error("This image format does not support checks");
                return 63;
            }
            bool quietOut = result.GetValue(quiet);
            void Log(string line) => Stdio.ErrorRaw(line + "\n");
            ImageCheck check;
            try
            {
                check = await Qcow2Check.RunAsync(node, mode, Log, ct);
                if (check.CorruptionsFixed > 0 || check.LeaksFixed > 0)
                {
                    if (fmt == "human" && !quietOut) Stdio.Out.Write(check.RepairSummary());
                    var again = await Qcow2Check.RunAsync(node, Qcow2RepairMode.None, Log, ct);
                    again.LeaksFixed = check.LeaksFixed;
                    again.CorruptionsFixed = check.CorruptionsFixed;
                    check = again;
                }
            }
            catch (Qcow2CheckException e)
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
            if (!quietOut) Stdio.Out.Write(fmt == "json" ? check.ToJson(filename, "qcow2") + "\n" : check.ToHuman());
            Stdio.Out.Flush();
            if (check.CheckErrors > 0)
            {
                Stdio.Error("Check failed");
                return 1;
            }
            return check.ExitCode;
        });
        return command;
    }
}
