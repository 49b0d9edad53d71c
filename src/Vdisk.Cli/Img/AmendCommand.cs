using System.CommandLine;
using Vdisk.Cli.Common;
using Vdisk.Drivers.Qcow2;
using Vdisk.Permissions;

namespace Vdisk.Cli.Img;

/// <summary><c>vdisk amend</c>: changes qcow2 header settings in place (compat, lazy_refcounts, size, backing file).</summary>
internal static class AmendCommand
{
    public static Command Create()
    {
        var format = new Option<string?>("-f");
        var options = new Option<string[]>("-o");
        var quiet = new Option<bool>("-q");
        var progress = new Option<bool>("-p");
        var force = new Option<bool>("--force");
        var imageOpts = new Option<bool>("--image-opts");
        var file = new Argument<string>("filename");
        var command = new Command("amend", "Change format options of an image like qemu-img amend");
        foreach (var o in new Option[] { format, options, quiet, progress, force, imageOpts }) command.Options.Add(o);
        command.Arguments.Add(file);
        command.SetAction(async (result, ct) =>
        {
            var list = ImgOptions.ParseList(result.GetValue(options) ?? []);
            if (list.Count == 0)
            {
                Stdio.Error("Must specify options (-o)");
                return 1;
            }
            string filename = result.GetValue(file)!;
            using var disk = ImgOpen.Open(result, filename, result.GetValue(format), result.GetValue(imageOpts), AccessProfiles.ImgModify);
            if (disk is null) return 1;
            if (disk.Root is not Qcow2Node node)
            {
                Stdio.Error($"Format driver '{disk.Root.DriverName}' does not support option amendment");
                return 1;
            }
            try
            {
                string? backingFile = node.Header.BackingFile, backingFormat = node.Header.BackingFormat;
                bool backingChanged = false;
                foreach (var (key, value) in list)
                {
                    switch (key)
                    {
                        case "compat":
                            int? v = value switch { "0.10" or "v2" => 2, "1.1" or "v3" => 3, _ => null };
                            if (v is null) { Stdio.Error($"Invalid compatibility level: '{value}'"); return 1; }
                            await node.SetVersionAsync(v.Value, ct);
                            break;
                        case "lazy_refcounts":
                            bool? on = ImgOptions.ParseBool(value);
                            if (on is null) { Stdio.Error($"Parameter 'lazy_refcounts' expects 'on' or 'off'"); return 1; }
                            await node.SetLazyRefcountsAsync(on.Value, ct);
                            break;
                        case "size":
                            if (!ImgOptions.TryParseSize(value, out long size)) { ImgOptions.InvalidSize(); return 1; }
                            await node.ResizeAsync(size, Preallocation.Off, ct);
                            break;
                        case "backing_file": backingFile = value.Length == 0 ? null : value; backingChanged = true; break;
                        case "backing_fmt": backingFormat = value; backingChanged = true; break;
                        case "cluster_size":
                            if (ImgOptions.TryParseSize(value, out long cs) && cs == node.Geometry.ClusterSize) break;
                            Stdio.Error("Changing the cluster size is not supported");
                            return 1;
                        case "refcount_bits":
                            if (value == node.Geometry.RefcountBits.ToString(System.Globalization.CultureInfo.InvariantCulture)) break;
                            Stdio.Error("vdisk cannot change refcount_bits yet");
                            return 1;
                        case "compression_type":
                            Stdio.Error("Changing the compression type is not supported");
                            return 1;
                        case "preallocation":
                            Stdio.Error("Changing the preallocation mode is not supported");
                            return 1;
                        default:
                            Stdio.Error($"Invalid parameter '{key}'");
                            return 1;
                    }
                }
                if (backingChanged) await node.ChangeBackingFileAsync(backingFile, backingFormat, ct);
                await disk.FlushAsync(ct);
            }
            catch (IOException e)
            {
                Stdio.Error(Stdio.Describe(e) ?? e.Message);
                return 1;
            }
            return 0;
        });
        return command;
    }
}
