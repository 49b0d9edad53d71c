using System.CommandLine;
using System.Globalization;
using Vdisk.Cli.Common;
using Vdisk.Graph;
using Vdisk.Permissions;

namespace Vdisk.Cli.Img;

/// <summary><c>vdisk map</c>: qemu-img map, human (data ranges with host offsets) or JSON (every range, with depth).</summary>
internal static class MapCommand
{
    private readonly record struct MapEntry(long Start, long Length, int Depth, bool Present, bool Zero, bool Data, long? Offset, string? File);

    public static Command Create()
    {
        var image = new ImageArguments();
        var output = new OutputOption();
        var start = new Option<string?>("--start-offset");
        var maxLength = new Option<string?>("--max-length");
        var file = new Argument<string>("filename");
        var command = new Command("map", "Show how an image's ranges are stored, like qemu-img map");
        image.AddTo(command);
        output.AddTo(command);
        command.Options.Add(start);
        command.Options.Add(maxLength);
        command.Arguments.Add(file);
        command.SetAction(async (result, ct) =>
        {
            string filename = result.GetValue(file)!;
            if (output.IsJson(result) is not bool json) return 1;
            string fmt = json ? "json" : "human";
            using var disk = ImgOpen.Open(result, filename, result.GetValue(image.Format), result.GetValue(image.ImageOpts),
                ImgOpen.WithForceShare(AccessProfiles.ImgRead, result.GetValue(image.ForceShare)));
            if (disk is null) return 1;
            long offset = 0, end = disk.Length;
            if (result.GetValue(start) is { } so && ImgOptions.TryParseSize(so, out long s)) offset = s;
            if (result.GetValue(maxLength) is { } ml && ImgOptions.TryParseSize(ml, out long m)) end = Math.Min(end, offset + m);
            var o = Stdio.Out;
            if (fmt == "human") o.Write("Offset          Length          Mapped to       File\n");
            MapEntry? current = null;
            bool first = true;
            try
            {
                while (offset < end)
                {
                    var st = await BlockChain.StatusAboveAsync(disk.Root, offset, Math.Min(end - offset, 1L << 30), ct);
                    long len = Math.Min(st.Length, end - offset);
                    if (len <= 0) break;
                    bool hasOffset = st.HostOffset is not null;
                    var entry = new MapEntry(offset, len, st.Depth, (st.Flags & BlockStatusFlags.Allocated) != 0,
                        (st.Flags & BlockStatusFlags.Zero) != 0, (st.Flags & BlockStatusFlags.Data) != 0,
                        st.HostOffset, hasOffset ? st.HostNode?.Filename : null);
                    if (current is { } c && Adjacent(c, entry))
                    {
                        current = c with { Length = c.Length + entry.Length };
                    }
                    else
                    {
                        if (current is { } prev && !Dump(prev, fmt, ref first)) return 1;
                        current = entry;
                    }
                    offset += len;
                }
                if (current is { } last && !Dump(last, fmt, ref first)) return 1;
            }
            catch (IOException e)
            {
                Stdio.Error($"Could not read file metadata: {Stdio.Describe(e)}");
                return 1;
            }
            if (fmt == "json") o.Write(first ? "[]\n" : "]\n");
            o.Flush();
            return 0;
        });
        return command;
    }

    private static bool Adjacent(MapEntry a, MapEntry b) =>
        a.Depth == b.Depth && a.Present == b.Present && a.Zero == b.Zero && a.Data == b.Data && a.File == b.File &&
        (a.Offset is null) == (b.Offset is null) && (a.Offset is null || a.Offset + a.Length == b.Offset);

    private static bool Dump(MapEntry e, string fmt, ref bool first)
    {
        var o = Stdio.Out;
        if (fmt == "json")
        {
            o.Write(first ? "[" : ",\n");
            first = false;
            o.Write(string.Create(CultureInfo.InvariantCulture,
                $"{{ \"start\": {e.Start}, \"length\": {e.Length}, \"depth\": {e.Depth}, \"present\": {B(e.Present)}, \"zero\": {B(e.Zero)}, \"data\": {B(e.Data)}"));
            if (e.Offset is long off) o.Write(string.Create(CultureInfo.InvariantCulture, $", \"offset\": {off}"));
            o.Write("}");
            return true;
        }
        if (e.Data && e.Offset is null)
        {
            Stdio.Error("File contains external, encrypted or compressed clusters.");
            return false;
        }
        if (e.Data)
            o.Write($"{Hex(e.Start),-16}{Hex(e.Length),-16}{Hex(e.Offset!.Value),-16}{e.File}\n");
        return true;
    }

    private static string B(bool b) => b ? "true" : "false";

    /// <summary>printf's %#x: "0" for zero, else 0x-prefixed.</summary>
    private static string Hex(long v) => v == 0 ? "0" : "0x" + v.ToString("x", CultureInfo.InvariantCulture);
}
