using System.CommandLine;
using Vdisk.Cli.Common;
using Vdisk.Options;
using Vdisk.Locking;
using Vdisk.Locking.Cluster;
using Vdisk.Native;
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
        command.SetAction((result, _) => RunAsync(new IoRequest(
            result.GetValue(file),
            result.GetValue(image.Format),
            result.GetValue(image.ImageOpts),
            result.GetValue(image.ForceShare),
            result.GetValue(commands) ?? [],
            result.GetValue(readOnly),
            result.GetValue(noCache),
            result.GetValue(cache),
            result.GetValue(discard),
            result.GetValue(aio),
            result.GetValue(nativeAio),
            result.GetValue(trace) ?? [],
            result.GetValue(version),
            wait.Options(result),
            ClusterOption.Settings(result))
        {
            Snapshot = result.GetValue(snapshot),
            CopyOnRead = result.GetValue(copyOnRead),
        }));
        return command;
    }

    /// <summary>What an io run was asked for, however its command line was read (<see cref="OneShotCommandLine"/>).</summary>
    public sealed record IoRequest(
        string? File, string? Format, bool ImageOpts, bool ForceShare, string[] Commands, bool ReadOnly, bool NoCache,
        string? Cache, string? Discard, string? Aio, bool NativeAio, string[] Trace, bool Version,
        LockWaitOptions? Wait, ClusterLockSettings? Cluster)
    {
        /// <summary>-s: a temporary overlay takes the writes.</summary>
        public bool Snapshot { get; init; }

        /// <summary>-C: reads copy what they find in the backing chain into the image.</summary>
        public bool CopyOnRead { get; init; }
    }

    public static async Task<int> RunAsync(IoRequest request)
    {
        if (request.Version)
        {
            // qemu-io prints its version and exits at -V, whatever else is on the line; vdisk io is its twin.
            Stdio.Out.Write(Personality.VersionText(Tool.QemuIo, Personality.VdiskVersion));
            return 0;
        }
        if (request.Format is not null && request.ImageOpts)
        {
            Stdio.Error("--image-opts and -f are mutually exclusive");
            return 1;
        }
        if (request.Discard is { } discardMode && !IoCacheMode.IsDiscardMode(discardMode))
        {
            Stdio.Error("Invalid discard option: " + discardMode);
            return 1;
        }
        var cacheMode = IoCacheMode.Default;
        if (request.Cache is { } cacheText)
        {
            if (IoCacheMode.Parse(cacheText) is not { } parsed)
            {
                Stdio.Error("Invalid cache option: " + cacheText);
                return 1;
            }
            cacheMode = parsed;
        }
        if (request.NoCache) cacheMode = cacheMode.WithNoCache();
        string? aioMode = request.NativeAio ? "native" : null;
        if (request.Aio is { } aioText)
        {
            if (aioText is not ("threads" or "native" or "io_uring"))
            {
                Stdio.Error("Invalid aio option: " + aioText);
                return 1;
            }
            aioMode = aioText;
        }
        foreach (var pattern in request.Trace)
            Stdio.Error($"warning: vdisk has no trace events; -T {pattern} is ignored");
        // Waiting for a lock and cluster locks (an etcd lease to revoke) need a clean end from the
        // start; otherwise the handlers come once the session has something to lose (IoSession.CleanEndNeeded).
        using var signals = new Signals(armed: request.Wait is not null || request.Cluster is not null
            || request.File?.Contains("cluster-lock-id", StringComparison.Ordinal) == true);
        await using var session = new IoSession(signals.Token)
        {
            OpenWrapper = request.Wait is not { } waitOptions ? null : open => LockWait.Run(open, waitOptions, signals.Token),
            ClusterLocks = request.Cluster,
            ImageOpts = request.ImageOpts,
            CleanEndNeeded = signals.Arm,
        };
        // A request that will never finish (held at a breakpoint, or another request waiting behind
        // one) cannot be closed cleanly: on SIGTERM/SIGINT end as qemu-io does, killed by the signal,
        // and let the kernel drop the locks with the descriptors.
        signals.EndBySignalWhen = () => session.HasRequestsInFlight;
        string? filename = request.File;
        bool forceShare = request.ForceShare;
        if (filename is not null)
        {
            ImageSource source;
            try
            {
                source = ImageArguments.Source(filename, request.Format, request.ImageOpts);
                if (forceShare && source.RefusesForceShare)
                {
                    Stdio.Error("-U conflicts with image options");
                    return 1;
                }
            }
            catch (OptionException e)
            {
                Stdio.Error(request.ImageOpts ? $"can't open: {e.Message}" : $"can't open device {filename}: {e.Message}");
                return 1;
            }
            if (aioMode == "native" && !cacheMode.Direct)
            {
                // raw_open_common: Linux AIO needs O_DIRECT.
                const string nativeNeedsDirect = "aio=native was specified, but it requires cache.direct=on, which was not specified.";
                Stdio.Error(request.ImageOpts ? $"can't open: {nativeNeedsDirect}" : $"can't open device {filename}: {nativeNeedsDirect}");
                return 1;
            }
            var flags = request.ReadOnly ? OpenFlags.None : OpenFlags.ReadWrite;
            if (forceShare) flags |= OpenFlags.ForceShare;
            if (request.Snapshot) flags |= OpenFlags.Snapshot;
            if (request.CopyOnRead) flags |= OpenFlags.CopyOnRead;
            // qemu-io opens with BDRV_O_UNMAP unless -d ignore: its discards reach the image.
            if (request.Discard is not ("ignore" or "off")) flags |= OpenFlags.Unmap;
            if (!session.OpenImage(source, flags, cacheMode)) return signals.ExitCode(1);
        }

        int lastError = 0;
        string[] lines = request.Commands;
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
    }
}
