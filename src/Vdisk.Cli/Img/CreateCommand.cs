using System.CommandLine;
using System.Text;
using Vdisk.Cli.Common;
using Vdisk.Drivers.Qcow2;
using Vdisk.Locking;

namespace Vdisk.Cli.Img;

/// <summary><c>vdisk create</c>: qemu-img create for raw and qcow2.</summary>
internal static class CreateCommand
{
    public static Command Create()
    {
        var format = new Option<string?>("-f") { Description = "image format (raw, qcow2)" };
        var backing = new Option<string?>("-b") { Description = "backing file" };
        var backingFormat = new Option<string?>("-F") { Description = "backing file format" };
        var unsafeBacking = new Option<bool>("-u") { Description = "do not open the backing file" };
        var quiet = new Option<bool>("-q") { Description = "quiet" };
        var options = new Option<string[]>("-o") { Description = "format options (cluster_size, compat, lazy_refcounts, preallocation, refcount_bits, compression_type, backing_file, backing_fmt)" };
        var file = new Argument<string>("filename");
        var size = new Argument<string?>("size") { Arity = ArgumentArity.ZeroOrOne };
        var command = new Command("create", "Create a new image like qemu-img create");
        command.Options.Add(format);
        command.Options.Add(backing);
        command.Options.Add(backingFormat);
        command.Options.Add(unsafeBacking);
        command.Options.Add(quiet);
        command.Options.Add(options);
        command.Arguments.Add(file);
        command.Arguments.Add(size);
        command.SetAction(async (result, ct) =>
        {
            string filename = result.GetValue(file)!;
            string fmt = result.GetValue(format) ?? "raw";
            if (fmt is not ("raw" or "qcow2"))
            {
                Stdio.Error($"{filename}: Unknown file format '{fmt}'");
                return 1;
            }
            var o = new CreateOptions { Filename = filename, Format = fmt };
            string? sizeText = result.GetValue(size);
            if (sizeText is not null)
            {
                if (!ImgOptions.TryParseSize(sizeText, out long s))
                {
                    ImgOptions.InvalidSize();
                    return 1;
                }
                o.Size = s;
            }
            var explicitKeys = new HashSet<string>();
            foreach (var (key, value) in ImgOptions.ParseList(result.GetValue(options) ?? []))
            {
                if (key == "help" || value == "?")
                {
                    Stdio.Out.Write(fmt == "qcow2" ? Qcow2Help : RawHelp);
                    Stdio.Out.Flush();
                    return 0;
                }
                if (!Apply(o, key, value, out string? error))
                {
                    Stdio.Error($"{filename}: {error}");
                    return 1;
                }
                explicitKeys.Add(key);
            }
            if (result.GetValue(backing) is { } b) { o.BackingFile = b; explicitKeys.Add("backing_file"); }
            if (result.GetValue(backingFormat) is { } bf) { o.BackingFormat = bf; explicitKeys.Add("backing_fmt"); }
            if (o.BackingFile is not null && fmt == "raw")
            {
                Stdio.Error($"{filename}: Invalid parameter 'backing_file'");
                return 1;
            }
            try
            {
                await ImageCreator.ResolveBackingAsync(o, openBacking: !result.GetValue(unsafeBacking), ct);
                if (o.Size is null) throw new CreateException("Image creation needs a size parameter");
                if (!result.GetValue(quiet))
                {
                    Stdio.Out.Write(FormattingLine(o, explicitKeys) + "\n");
                    Stdio.Out.Flush();
                }
                await ImgOpen.RunAsync(result, token => ImageCreator.CreateAsync(o, token), ct);
                return 0;
            }
            catch (CreateException e)
            {
                Stdio.Error($"{filename}: {e.Message}");
                if (e.Hint is not null) Stdio.ErrorRaw(e.Hint);
                return 1;
            }
            catch (Exception e) when (Stdio.Describe(e) is { } text)
            {
                Stdio.Error($"{filename}: {text}");
                return 1;
            }
        });
        return command;
    }

    internal static bool Apply(CreateOptions o, string key, string value, out string? error)
    {
        error = null;
        bool? flag = ImgOptions.ParseBool(value);
        switch (key)
        {
            case "size":
                if (!ImgOptions.TryParseSize(value, out long size)) { error = "Parameter 'size' expects a non-negative number below 2^64"; return false; }
                o.Size = size;
                return true;
            case "preallocation":
                Preallocation? p = value switch { "off" => Preallocation.Off, "metadata" => Preallocation.Metadata, "falloc" => Preallocation.Falloc, "full" => Preallocation.Full, _ => null };
                if (p is null || (o.Format == "raw" && p == Preallocation.Metadata)) { error = $"Parameter 'preallocation' does not accept value '{value}'"; return false; }
                o.Preallocation = p.Value;
                return true;
        }
        if (o.Format != "qcow2") { error = $"Invalid parameter '{key}'"; return false; }
        switch (key)
        {
            case "backing_file": o.BackingFile = value; return true;
            case "backing_fmt": o.BackingFormat = value; return true;
            case "cluster_size":
                if (!ImgOptions.TryParseSize(value, out long cs)) { error = "Parameter 'cluster_size' expects a non-negative number below 2^64"; return false; }
                o.ClusterSize = cs;
                return true;
            case "compat":
                int? v = value switch { "0.10" or "v2" => 2, "1.1" or "v3" => 3, _ => null };
                if (v is null) { error = $"Parameter 'version' does not accept value '{value}'"; return false; }
                o.Version = v.Value;
                return true;
            case "compression_type":
                Qcow2CompressionType? t = value switch { "zlib" => Qcow2CompressionType.Zlib, "zstd" => Qcow2CompressionType.Zstd, _ => null };
                if (t is null) { error = $"Parameter 'compression-type' does not accept value '{value}'"; return false; }
                o.CompressionType = t.Value;
                return true;
            case "lazy_refcounts":
                if (flag is null) { error = "Parameter 'lazy_refcounts' expects 'on' or 'off'"; return false; }
                o.LazyRefcounts = flag.Value;
                return true;
            case "extended_l2":
                if (flag is null) { error = "Parameter 'extended_l2' expects 'on' or 'off'"; return false; }
                o.ExtendedL2 = flag.Value;
                return true;
            case "refcount_bits":
                if (!long.TryParse(value, out long bits)) { error = "Parameter 'refcount_bits' expects a number"; return false; }
                o.RefcountBits = bits;
                return true;
            case "data_file":
            case "data_file_raw":
            case "encryption":
                error = $"vdisk does not support the qcow2 option '{key}'";
                return false;
            default:
                if (key.StartsWith("encrypt.", StringComparison.Ordinal)) { error = "vdisk does not support encrypted qcow2 images"; return false; }
                error = $"Invalid parameter '{key}'";
                return false;
        }
    }

    /// <summary>qemu_opts_print's line, in the order qemu-img 7.2 prints qcow2's and raw's options.</summary>
    private static string FormattingLine(CreateOptions o, HashSet<string> explicitKeys)
    {
        var sb = new StringBuilder($"Formatting '{o.Filename}', fmt={o.Format} ");
        var parts = new List<string>();
        string prealloc = o.Preallocation.ToString().ToLowerInvariant();
        if (o.Format == "raw")
        {
            parts.Add($"size={o.Size}");
            if (explicitKeys.Contains("preallocation")) parts.Add($"preallocation={prealloc}");
        }
        else
        {
            parts.Add($"cluster_size={o.ClusterSize}");
            parts.Add($"extended_l2={(o.ExtendedL2 ? "on" : "off")}");
            if (explicitKeys.Contains("preallocation")) parts.Add($"preallocation={prealloc}");
            parts.Add($"compression_type={(o.CompressionType == Qcow2CompressionType.Zstd ? "zstd" : "zlib")}");
            parts.Add($"size={o.Size}");
            if (explicitKeys.Contains("compat")) parts.Add($"compat={(o.Version == 2 ? "0.10" : "1.1")}");
            if (o.BackingFile is not null) parts.Add($"backing_file={o.BackingFile}");
            if (o.BackingFormat is not null) parts.Add($"backing_fmt={o.BackingFormat}");
            parts.Add($"lazy_refcounts={(o.LazyRefcounts ? "on" : "off")}");
            parts.Add($"refcount_bits={o.RefcountBits}");
        }
        sb.Append(string.Join(' ', parts));
        return sb.ToString();
    }

    private const string RawHelp = """
        Supported raw options:
          preallocation=<str>    - Preallocation mode (allowed values: off, falloc, full)
          size=<size>            - Virtual disk size

        The protocol level may support further options.
        Specify the target filename to include those options.

        """;

    private const string Qcow2Help = """
        Supported qcow2 options:
          backing_file=<str>     - File name of a base image
          backing_fmt=<str>      - Image format of the base image
          cluster_size=<size>    - qcow2 cluster size
          compat=<str>           - Compatibility level (v2 [0.10] or v3 [1.1])
          compression_type=<str> - Compression method used for image cluster compression
          extended_l2=<bool (on/off)> - Extended L2 tables
          lazy_refcounts=<bool (on/off)> - Postpone refcount updates
          preallocation=<str>    - Preallocation mode (allowed values: off, metadata, falloc, full)
          refcount_bits=<num>    - Width of a reference count entry in bits
          size=<size>            - Virtual disk size

        The protocol level may support further options.
        Specify the target filename to include those options.

        """;

    internal static LockingMode DefaultLocking => LockingMode.Auto;
}
