using System.CommandLine;
using Vdisk.Cli.Common;
using Vdisk.Graph;
using Vdisk.Output;
using Vdisk.Permissions;

namespace Vdisk.Cli.Img;

/// <summary><c>vdisk measure</c>: qemu-img measure for raw and qcow2 targets (qcow2_measure's arithmetic).</summary>
internal static class MeasureCommand
{
    public static Command Create()
    {
        var image = new ImageArguments();
        var output = new OutputOption();
        var outFormat = new Option<string?>("-O");
        var options = new Option<string[]>("-o");
        var size = new Option<string?>("--size");
        var file = new Argument<string?>("filename") { Arity = ArgumentArity.ZeroOrOne };
        var command = new Command("measure", "Compute the size a new image needs, like qemu-img measure");
        image.AddTo(command);
        output.AddTo(command);
        command.Options.Add(outFormat);
        command.Options.Add(options);
        command.Options.Add(size);
        command.Arguments.Add(file);
        command.SetAction(async (result, ct) =>
        {
            if (output.IsJson(result) is not bool asJson) return 1;
            string fmt = asJson ? "json" : "human";
            string target = result.GetValue(outFormat) ?? "raw";
            var o = new CreateOptions { Filename = "", Format = target };
            foreach (var (k, v) in ImgOptions.ParseList(result.GetValue(options) ?? []))
            {
                if (!CreateCommand.Apply(o, k, v, out string? error))
                {
                    Stdio.Error(error!);
                    return 1;
                }
            }
            string? filename = result.GetValue(file);
            string? sizeText = result.GetValue(size);
            if ((filename is null) == (sizeText is null))
            {
                Stdio.Error(filename is null ? "Either --size N or one filename must be specified." : "--size N cannot be used together with a filename.");
                return 1;
            }
            long virtualSize, required = 0;
            bool bitmaps = false;
            if (sizeText is not null)
            {
                if (!ImgOptions.TryParseSize(sizeText, out virtualSize))
                {
                    ImgOptions.InvalidSize();
                    return 1;
                }
                if (o.Preallocation is Drivers.Qcow2.Preallocation.Falloc or Drivers.Qcow2.Preallocation.Full) required = virtualSize;
            }
            else
            {
                using var disk = ImgOpen.Open(result, filename!, result.GetValue(image.Format), result.GetValue(image.ImageOpts),
                    ImgOpen.WithForceShare(AccessProfiles.ImgRead, result.GetValue(image.ForceShare)));
                if (disk is null) return 1;
                virtualSize = disk.Length;
                long cluster = target == "qcow2" ? o.ClusterSize : 1;
                bitmaps = target == "qcow2" && o.Version >= 3 && disk.Root is Drivers.Qcow2.Qcow2Node;
                for (long pos = 0; pos < virtualSize;)
                {
                    var st = await BlockChain.StatusAboveAsync(disk.Root, pos, virtualSize - pos, ct);
                    long n = Math.Max(1, st.Length);
                    if ((st.Flags & BlockStatusFlags.Zero) == 0 && (st.Flags & (BlockStatusFlags.Data | BlockStatusFlags.Allocated)) == (BlockStatusFlags.Data | BlockStatusFlags.Allocated))
                    {
                        n = ((pos + n + cluster - 1) / cluster * cluster) - pos;
                        required += pos % cluster + n;
                    }
                    pos += n;
                }
            }
            long fully;
            if (target == "qcow2")
            {
                long aligned = (virtualSize + o.ClusterSize - 1) / o.ClusterSize * o.ClusterSize;
                fully = Drivers.Qcow2.Qcow2Measure.PreallocSize(aligned, o.ClusterSize, System.Numerics.BitOperations.Log2((ulong)o.RefcountBits));
                required = fully - aligned + required;
            }
            else
            {
                fully = virtualSize;
            }
            if (fmt == "json")
            {
                var json = new QemuJsonObject().Add("required", required).Add("fully-allocated", fully);
                if (bitmaps) json.Add("bitmaps", 0L);
                Stdio.Out.Write(json.ToPrettyJson() + "\n");
            }
            else
            {
                Stdio.Out.Write($"required size: {required}\nfully allocated size: {fully}\n");
                if (bitmaps) Stdio.Out.Write("bitmaps size: 0\n");
            }
            Stdio.Out.Flush();
            return 0;
        });
        return command;
    }
}
