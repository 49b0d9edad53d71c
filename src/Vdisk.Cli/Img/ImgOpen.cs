using Vdisk.Cli.Common;
using Vdisk.Options;
using Vdisk.Permissions;

namespace Vdisk.Cli.Img;

/// <summary>img_open: opens an image with a verb's flags, printing qemu-img's one-line error on failure.</summary>
internal static class ImgOpen
{
    /// <summary>The <c>--wait</c> of the running verb (one verb per process), or null.</summary>
    public static Vdisk.Locking.LockWaitOptions? Wait { get; set; }

    /// <summary>Ends a <c>--wait</c> (Ctrl-C, SIGTERM).</summary>
    public static CancellationToken WaitCancellation { get; set; }

    /// <summary>Runs an open (or a create) under the verb's <c>--wait</c>, if any.</summary>
    public static T Run<T>(Func<T> open) =>
        Wait is null ? open() : Vdisk.Locking.LockWait.Run(open, Wait, WaitCancellation);

    /// <summary>The asynchronous form of <see cref="Run{T}"/>.</summary>
    public static async Task RunAsync(Func<CancellationToken, Task> open, CancellationToken cancellationToken)
    {
        if (Wait is null)
        {
            await open(cancellationToken).ConfigureAwait(false);
            return;
        }
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, WaitCancellation);
        await Vdisk.Locking.LockWait.RunAsync(async ct => { await open(ct).ConfigureAwait(false); return 0; }, Wait, linked.Token).ConfigureAwait(false);
    }

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
                if ((flags & OpenFlags.ForceShare) != 0 && source.RefusesForceShare)
                {
                    Stdio.Error("--force-share/-U conflicts with image options");
                    return null;
                }
            }
            else
            {
                source = ImageSource.FromFile(filename, format);
            }
            return Run(() => DiskImage.Open(source, flags));
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
