using System.CommandLine;
using Vdisk.Cli.Common;
using Vdisk.Graph;
using Vdisk.Permissions;

namespace Vdisk.Cli.Img;

/// <summary>
/// <c>vdisk amend</c>: qemu-img amend for qcow2 (compat, lazy_refcounts, size, encrypt.* key slots) and luks (key slots), with img_amend's
/// checks in its order; the options are all read and checked before the image is changed.
/// </summary>
internal static class AmendCommand
{
    public static Command Create()
    {
        var image = new ImageArguments(longFormat: false, format: "format of the image (probed if not given)", imageOpts: "the file name is a key=value option string");
        var format = image.Format;
        var imageOpts = image.ImageOpts;
        var options = new Option<string[]>("-o") { Description = "options to change, key=value[,...]: compat, lazy_refcounts, size, LUKS key slots (-o help lists them)" };
        var quiet = new Option<bool>("-q") { Description = "quiet: no progress" };
        var progress = new Option<bool>("-p") { Description = "show progress: \"    (xx.xx/100%)\" lines on stdout (a bar on a terminal)" };
        var force = new Option<bool>("--force") { Description = "allow changes QEMU considers unsafe: overwriting an active LUKS key slot, erasing the last one" };
        var cache = new Option<string?>("-t") { Description = "cache mode: writeback (default), writethrough, none, directsync, unsafe" };
        var files = new Argument<string[]>("filename") { Arity = ArgumentArity.ZeroOrMore, Description = "the image to change" };
        var command = new Command("amend", "Change format options of an image like qemu-img amend");
        image.AddTo(command, withForceShare: false);
        foreach (var o in new Option[] { options, quiet, progress, force, cache }) command.Options.Add(o);
        command.Arguments.Add(files);
        command.SetAction(async (result, ct) =>
        {
            if (!ImgOptions.TryAccumulate(result.GetValue(options), out string? optionText)) return 1;
            if (optionText is null) return ImgOptions.ErrorExit("Must specify options (-o)");
            using var meter = new ImgProgress(result.GetValue(progress) && !result.GetValue(quiet), 1.0f, "Amending");
            var names = result.GetValue(files) ?? [];
            string? fmt = result.GetValue(format);
            bool help = Vdisk.Options.QemuOpts.HasHelpOption(optionText);
            if (fmt is not null && help) return PrintHelp(fmt) ? 0 : 1;
            if (names.Length != 1)
            {
                Stdio.Error("Expecting one image file name");
                return 1;
            }
            if (result.GetValue(cache) is { } c && !ImgOptions.IsCacheMode(c))
            {
                Stdio.Error($"Invalid cache option: {c}");
                return 1;
            }
            using var disk = ImgOpen.Open(result, names[0], fmt, result.GetValue(imageOpts), AccessProfiles.ImgModify);
            if (disk is null) return 1;
            if (help) return PrintHelp(disk.Root.DriverName) ? 0 : 1;
            string driver = disk.Root.DriverName;
            if (BlockDrivers.Find(driver)?.CreateAmendOptions() is not { } opts)
            {
                Stdio.Error($"Format driver '{driver}' does not support option amendment");
                return 1;
            }
            if (opts.Parse(optionText) is { } parseError)
            {
                // An option of create's list that amend cannot change gets a hint saying so.
                bool createOnly = CreateOptionLists.ForFormat(driver, withProtocol: false) is { } create && create.Parse(optionText) is null;
                ImgOptions.Error(createOnly ? parseError with { Hint = "This option is only supported for image creation\n" } : parseError);
                return 1;
            }
            meter.Print(0, 0);
            try
            {
                await disk.AmendAsync(opts, result.GetValue(force), (done, total) => meter.Print(total == 0 ? 0 : 100f * done / total, 0), ct);
                await disk.FlushAsync(ct);
            }
            catch (IOException e)
            {
                meter.Print(100, 0);
                Stdio.Error(Stdio.Describe(e) ?? e.Message);
                return 1;
            }
            meter.Print(100, 0);
            return 0;
        });
        return command;
    }

    /// <summary>print_amend_option_help.</summary>
    private static bool PrintHelp(string format)
    {
        if (BlockDrivers.Find(format)?.CreateAmendOptions() is not { } opts)
        {
            Stdio.Error(CreateOptionLists.QemuFormats.Contains(format)
                ? $"Format driver '{format}' does not support option amendment"
                : $"Unknown file format '{format}'");
            return false;
        }
        Stdio.Out.Write(opts.Help($"Amend options for '{format}':"));
        Stdio.Out.Flush();
        return true;
    }
}
