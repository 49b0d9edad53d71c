using System.CommandLine;
using Vdisk.Cli.Common;
using Vdisk.Options;
using Vdisk.Permissions;

namespace Vdisk.Cli.Io;

/// <summary><c>vdisk io</c>: qemu-io's command line (-f, -r, -U, --image-opts, -c CMD...).</summary>
internal static class IoCommand
{
    public const string Name = "io";

    public static Command Create()
    {
        var image = new ImageArguments();
        var wait = new LockWaitOption();
        var commands = new Option<string[]>("--cmd", "-c") { Description = "run a command (repeatable)", AllowMultipleArgumentsPerToken = false };
        var readOnly = new Option<bool>("--read-only", "-r") { Description = "open read-only" };
        var noCache = new Option<bool>("--nocache", "-n") { Description = "bypass the host page cache (O_DIRECT)" };
        var snapshot = new Option<bool>("--snapshot", "-s") { Description = "use a temporary overlay: writes never reach the image" };
        var copyOnRead = new Option<bool>("--copy-on-read", "-C") { Description = "copy what reads find in the backing chain into the image" };
        var cache = new Option<string?>("--cache", "-t") { Description = "cache mode: writethrough (the default: every write is flushed), writeback, unsafe (no flushes), none, directsync" };
        var discard = new Option<string?>("--discard", "-d") { Description = "discard mode (ignore, unmap)" };
        var aio = new Option<string?>("--aio", "-i") { Description = "AIO mode: threads, native (needs -n or -t none/directsync), io_uring; vdisk does its I/O the same way in each" };
        var nativeAio = new Option<bool>("--native-aio", "-k") { Description = "the same as --aio native" };
        var trace = new Option<string[]>("--trace", "-T") { Description = "trace events: accepted and ignored (vdisk has no trace points)", AllowMultipleArgumentsPerToken = false };
        var version = new Option<bool>("--version", "-V") { Description = "print qemu-io's version text (with vdisk's version)" };
        var file = new Argument<string?>("file") { Arity = ArgumentArity.ZeroOrOne, Description = "image file, json: filename, or option string with --image-opts" };

        var command = new Command(Name, "Exercise an image like qemu-io: read, write, discard, map...");
        image.AddTo(command);
        wait.AddTo(command);
        command.Options.Add(commands);
        command.Options.Add(readOnly);
        command.Options.Add(noCache);
        command.Options.Add(snapshot);
        command.Options.Add(copyOnRead);
        command.Options.Add(cache);
        command.Options.Add(discard);
        command.Options.Add(aio);
        command.Options.Add(nativeAio);
        command.Options.Add(trace);
        command.Options.Add(version);
        command.Arguments.Add(file);
        command.SetAction(async (result, _) =>
        {
            if (result.GetValue(version))
            {
                // qemu-io prints its version and exits at -V, whatever else is on the line; vdisk io is its twin.
                Stdio.Out.Write(Personality.VersionText(Tool.QemuIo, Personality.VdiskVersion));
                return 0;
            }
            if (result.GetValue(image.Format) is not null && result.GetValue(image.ImageOpts))
            {
                Stdio.Error("--image-opts and -f are mutually exclusive");
                return 1;
            }
            if (result.GetValue(discard) is { } discardMode && !IoCacheMode.IsDiscardMode(discardMode))
            {
                Stdio.Error("Invalid discard option: " + discardMode);
                return 1;
            }
            var cacheMode = IoCacheMode.Default;
            if (result.GetValue(cache) is { } cacheText)
            {
                if (IoCacheMode.Parse(cacheText) is not { } parsed)
                {
                    Stdio.Error("Invalid cache option: " + cacheText);
                    return 1;
                }
                cacheMode = parsed;
            }
            if (result.GetValue(noCache)) cacheMode = cacheMode.WithNoCache();
            string? aioMode = result.GetValue(nativeAio) ? "native" : null;
            if (result.GetValue(aio) is { } aioText)
            {
                if (aioText is not ("threads" or "native" or "io_uring"))
                {
                    Stdio.Error("Invalid aio option: " + aioText);
                    return 1;
                }
                aioMode = aioText;
            }
            foreach (var pattern in result.GetValue(trace) ?? [])
                Stdio.Error($"warning: vdisk has no trace events; -T {pattern} is ignored");
            using var signals = new Signals();
            await using var session = new IoSession(signals.Token)
            {
                OpenWrapper = wait.Options(result) is null ? null : open => wait.Open(result, open, signals.Token),
                ClusterLocks = ClusterOption.Settings(result),
            };
            string? filename = result.GetValue(file);
            bool forceShare = result.GetValue(image.ForceShare);
            if (filename is not null)
            {
                ImageSource source;
                try
                {
                    source = image.Source(result, filename);
                    if (forceShare && source.RefusesForceShare)
                    {
                        Stdio.Error("-U conflicts with image options");
                        return 1;
                    }
                }
                catch (OptionException e)
                {
                    Stdio.Error(result.GetValue(image.ImageOpts) ? $"can't open: {e.Message}" : $"can't open device {filename}: {e.Message}");
                    return 1;
                }
                if (aioMode == "native" && !cacheMode.Direct)
                {
                    // raw_open_common: Linux AIO needs O_DIRECT.
                    const string nativeNeedsDirect = "aio=native was specified, but it requires cache.direct=on, which was not specified.";
                    Stdio.Error(result.GetValue(image.ImageOpts) ? $"can't open: {nativeNeedsDirect}" : $"can't open device {filename}: {nativeNeedsDirect}");
                    return 1;
                }
                var flags = result.GetValue(readOnly) ? OpenFlags.None : OpenFlags.ReadWrite;
                if (forceShare) flags |= OpenFlags.ForceShare;
                if (result.GetValue(snapshot)) flags |= OpenFlags.Snapshot;
                if (result.GetValue(copyOnRead)) flags |= OpenFlags.CopyOnRead;
                // qemu-io opens with BDRV_O_UNMAP unless -d ignore: its discards reach the image.
                if (result.GetValue(discard) is not ("ignore" or "off")) flags |= OpenFlags.Unmap;
                if (!session.OpenImage(source, flags, cacheMode)) return signals.ExitCode(1);
            }

            int lastError = 0;
            string[] lines = result.GetValue(commands) ?? [];
            if (lines.Length > 0)
            {
                foreach (var line in lines)
                {
                    if (session.QuitRequested || signals.Token.IsCancellationRequested) break;
                    int ret = await session.RunAsync(line);
                    if (ret < 0) lastError = ret;
                }
            }
            else
            {
                while (!session.QuitRequested && !signals.Token.IsCancellationRequested)
                {
                    Stdio.Out.Write("qemu-io> ");
                    Stdio.Out.Flush();
                    string? line = await Console.In.ReadLineAsync(signals.Token).AsTask().ContinueWith(t => t.IsCompletedSuccessfully ? t.Result : null);
                    if (line is null) break;
                    int ret = await session.RunAsync(line);
                    if (ret < 0) lastError = ret;
                }
            }
            Stdio.Out.Flush();
            return signals.ExitCode(lastError < 0 ? 1 : 0);
        });
        return command;
    }
}
