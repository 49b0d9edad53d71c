using Vdisk.Cli.Common;
using Vdisk.Options;
using Vdisk.Permissions;

namespace Vdisk.Cli.Img;

/// <summary>img_open: opens an image with a verb's flags, printing qemu-img's one-line error on failure.</summary>
internal static class ImgOpen
{
    public static DiskImage? Open(string filename, string? format, bool imageOpts, OpenFlags flags, bool quietErrors = false)
    {
        try
        {
            ImageSource source;
            if (imageOpts)
            {
                if (format is not null)
                {
                    Stdio.Error("--image-opts and --format are mutually exclusive");
                    return null;
                }
                source = ImageSource.FromImageOptions(filename, Diagnostics.WarningSink);
                if ((flags & OpenFlags.ForceShare) != 0 && source.Options?["force-share"] is OptionScalar fs && NodeOptions.ParseBool(fs.Text) == false)
                {
                    Stdio.Error("--force-share/-U conflicts with image options");
                    return null;
                }
            }
            else
            {
                source = ImageSource.FromFile(filename, format);
            }
            return DiskImage.Open(source, flags);
        }
        catch (Exception e) when (Stdio.Describe(e) is { } text)
        {
            if (!quietErrors) Stdio.Error($"Could not open '{filename}': {text}");
            return null;
        }
    }

    /// <summary>-U adds force-share to a read-only verb's flags.</summary>
    public static OpenFlags WithForceShare(OpenFlags flags, bool forceShare) => forceShare ? flags | OpenFlags.ForceShare : flags;
}
