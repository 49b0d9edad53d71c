using System.CommandLine;
using Vdisk.Options;

namespace Vdisk.Cli.Common;

/// <summary>The image-selection options qemu-img and qemu-io share: -f, --image-opts, -U.</summary>
internal sealed class ImageArguments
{
    public Option<string?> Format { get; } = new("--format", "-f") { Description = "image format (raw, qcow2)" };
    public Option<bool> ImageOpts { get; } = new("--image-opts") { Description = "treat the filename as a key=value option string" };
    public Option<bool> ForceShare { get; } = new("--force-share", "-U") { Description = "open read-only and share all permissions (no conflict with other users)" };

    public void AddTo(Command command, bool withForceShare = true)
    {
        command.Options.Add(Format);
        command.Options.Add(ImageOpts);
        if (withForceShare) command.Options.Add(ForceShare);
    }

    /// <summary>Builds the source; with --image-opts the filename is an option string.</summary>
    public ImageSource Source(ParseResult result, string filename)
    {
        if (!result.GetValue(ImageOpts)) return ImageSource.FromFile(filename, result.GetValue(Format));
        if (result.GetValue(Format) is not null)
            throw new OptionException("--image-opts and --format are mutually exclusive");
        return ImageSource.FromImageOptions(filename, Diagnostics.WarningSink);
    }
}
