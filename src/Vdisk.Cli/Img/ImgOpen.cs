using System.CommandLine;
using Vdisk.Cli.Common;
using Vdisk.Options;
using Vdisk.Permissions;

namespace Vdisk.Cli.Img;

/// <summary>
/// img_open: opens an image with a verb's flags, printing qemu-img's one-line error on failure.
/// Each call takes the verb's <see cref="ParseResult"/>, from which it reads the verb's
/// <c>--wait</c>: nothing about the run is kept between calls.
/// </summary>
internal static class ImgOpen
{
    /// <summary>Runs an open (or a create) under the verb's <c>--wait</c>, if any.</summary>
    public static T Run<T>(ParseResult result, Func<T> open) => Run(LockWaitOption.Of(result), open);

    /// <summary>Runs an open under <paramref name="wait"/> (null: no waiting).</summary>
    public static T Run<T>(Vdisk.Locking.LockWaitOptions? wait, Func<T> open)
    {
        if (wait is null) return open();
        using var signals = new Signals();
        try
        {
            return Vdisk.Locking.LockWait.Run(open, wait, signals.Token);
        }
        catch (OperationCanceledException) when (signals.Received > 0)
        {
            throw new SignalledException(signals.ExitCode(1));
        }
    }

    /// <summary>
    /// Creates the target image of a verb that writes one (convert, dd) as bdrv_img_create does,
    /// queueing on a lock with <c>--wait</c>; false after printing <c>PREFIX: ERROR</c> and
    /// QEMU's hint, which is how both verbs word a failed creation.
    /// </summary>
    public static async Task<bool> TryCreateTargetAsync(ParseResult result, CreateOptions create, string errorPrefix, CancellationToken cancellationToken)
    {
        try
        {
            await RunAsync(result, token => ImageCreator.CreateAsync(create, token), cancellationToken).ConfigureAwait(false);
            return true;
        }
        catch (Exception e) when (Stdio.Describe(e) is { } text)
        {
            Stdio.Error($"{errorPrefix}: {text}");
            if (e is CreateException { Hint: { } hint }) Stdio.ErrorRaw(hint);
            return false;
        }
    }

    /// <summary>The asynchronous form of <see cref="Run{T}"/>.</summary>
    public static async Task RunAsync(ParseResult result, Func<CancellationToken, Task> open, CancellationToken cancellationToken)
    {
        if (LockWaitOption.Of(result) is not { } wait)
        {
            await open(cancellationToken).ConfigureAwait(false);
            return;
        }
        using var signals = new Signals();
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, signals.Token);
        try
        {
            await Vdisk.Locking.LockWait.RunAsync(async ct => { await open(ct).ConfigureAwait(false); return 0; }, wait, linked.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (signals.Received > 0)
        {
            throw new SignalledException(signals.ExitCode(1));
        }
    }

    /// <summary>
    /// img_open: <paramref name="filename"/> with <paramref name="format"/>, or as an option string
    /// with <paramref name="imageOpts"/>; <paramref name="openOptions"/> (img_open_file's options,
    /// with its driver) stand for the format when given.
    /// </summary>
    public static DiskImage? Open(ParseResult result, string filename, string? format, bool imageOpts, OpenFlags flags, bool quietErrors = false, OptionDict? openOptions = null)
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
                source = openOptions is null ? ImageSource.FromFile(filename, format) : ImageSource.FromFile(filename, openOptions);
            }
            return Run(result, () => DiskImage.Open(source, flags, graph: ClusterOption.Graph(result)));
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
