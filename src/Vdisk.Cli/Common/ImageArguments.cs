using System.CommandLine;
using Vdisk.Options;

namespace Vdisk.Cli.Common;

/// <summary>
/// The image-selection options every qemu-img verb and qemu-io share: -f, --image-opts, -U, and how
/// they make an <see cref="ImageSource"/>. Only some of QEMU's tools spell -f as <c>--format</c>
/// (qemu-io, info, check, map); the others refuse the long form, so it is asked for. Each verb
/// keeps its own help texts.
/// </summary>
internal sealed class ImageArguments
{
    public ImageArguments(bool longFormat = true, string? format = null, string? imageOpts = null, string? forceShare = null)
    {
        Format = longFormat ? new("--format", "-f") : new("-f");
        Format.Description = format ?? "image format (raw, qcow2)";
        ImageOpts = new("--image-opts") { Description = imageOpts ?? "treat the filename as a key=value option string" };
        ForceShare = new("--force-share", "-U") { Description = forceShare ?? "open read-only and share all permissions (no conflict with other users)" };
    }

    public Option<string?> Format { get; }
    public Option<bool> ImageOpts { get; }
    public Option<bool> ForceShare { get; }

    public void AddTo(Command command, bool withForceShare = true)
    {
        command.Options.Add(Format);
        command.Options.Add(ImageOpts);
        if (withForceShare) command.Options.Add(ForceShare);
    }

    /// <summary>Builds the source; with --image-opts the filename is an option string.</summary>
    public ImageSource Source(ParseResult result, string filename) =>
        Source(filename, result.GetValue(Format), result.GetValue(ImageOpts));

    /// <summary>The same for the options' values.</summary>
    public static ImageSource Source(string filename, string? format, bool imageOpts)
    {
        if (!imageOpts) return ImageSource.FromFile(filename, format);
        if (format is not null)
            throw new OptionException("--image-opts and --format are mutually exclusive");
        return ImageSource.FromImageOptions(filename, Diagnostics.WarningSink);
    }
}
