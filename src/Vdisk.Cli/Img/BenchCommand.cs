using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using Vdisk.Cli.Common;
using Vdisk.Graph;
using Vdisk.Native;
using Vdisk.Options;
using Vdisk.Permissions;

namespace Vdisk.Cli.Img;

/// <summary>
/// <c>vdisk bench</c>: qemu-img bench. Sends <c>-c</c> read (or <c>-w</c> write) requests of
/// <c>-s</c> bytes, <c>-d</c> at a time, from <c>-o</c> onwards in steps of <c>-S</c> (wrapping
/// at the image's end), with a flush every <c>--flush-interval</c> requests (after draining the
/// queue unless <c>--no-drain</c>), and prints qemu-img's two lines; only the time differs.
/// </summary>
internal static class BenchCommand
{
    public static Command Create()
    {
        var image = new ImageArguments(longFormat: false, format: "format of the image (probed if not given)");
        var count = new Option<string?>("-c") { Description = "number of requests (default 75000)" };
        var depth = new Option<string?>("-d") { Description = "requests in flight at once (default 64)" };
        var noCache = new Option<bool>("-n") { Description = "native AIO (needs -t none or directsync)" };
        var aio = new Option<string?>("-i") { Description = "AIO mode: threads, native, io_uring" };
        var offset = new Option<string?>("-o") { Description = "offset of the first request (k, M, G... suffixes)" };
        var quiet = new Option<bool>("-q") { Description = "quiet" };
        var size = new Option<string?>("-s") { Description = "bytes per request (default 4096)" };
        var step = new Option<string?>("-S") { Description = "distance between request offsets (default: the request size)" };
        var cache = new Option<string?>("-t") { Description = "cache mode: none, writeback (default), writethrough, directsync, unsafe" };
        var write = new Option<bool>("-w") { Description = "write instead of read" };
        var pattern = new Option<string?>("--pattern") { Description = "the byte written (default 0)" };
        var flushInterval = new Option<string?>("--flush-interval") { Description = "flush every N requests (write tests)" };
        var noDrain = new Option<bool>("--no-drain") { Description = "flush without waiting for the requests in flight" };
        var files = new Argument<string[]>("filename") { Arity = ArgumentArity.ZeroOrMore, Description = "the image" };
        var command = new Command("bench", "Run a simple I/O benchmark on an image like qemu-img bench");
        image.AddTo(command);
        foreach (var o in new Option[] { count, depth, noCache, aio, offset, quiet, size, step, cache, write, pattern, flushInterval, noDrain })
            command.Options.Add(o);
        command.Arguments.Add(files);
        command.SetAction(async (result, ct) =>
        {
            // qemu-img checks each option as getopt meets it; the parser keeps no order, so with
            // several bad options this reports the first in this fixed order instead.
            int requests = 75000, queueDepth = 64, patternByte = 0, interval = 0;
            long start = 0, bufferSize = 4096, stepSize = 0;
            if (result.GetValue(count) is { } c && !TryUnsigned(c, int.MaxValue, "Invalid request count specified", out requests)) return 1;
            if (result.GetValue(depth) is { } d && !TryUnsigned(d, int.MaxValue, "Invalid queue depth specified", out queueDepth)) return 1;
            bool direct = false, writeThrough = false, noFlush = false;
            bool nativeAio = result.GetValue(noCache);
            if (result.GetValue(aio) is { } a)
            {
                if (a is not ("threads" or "native" or "io_uring"))
                {
                    Stdio.Error($"Invalid aio option: {a}");
                    return 1;
                }
                nativeAio = a == "native";
            }
            if (result.GetValue(offset) is { } o && !ImgOptions.TryCvtNum("offset", o, out start)) return 1;
            if (result.GetValue(size) is { } s && !ImgOptions.TryCvtNum("buffer size", s, out bufferSize, 0, int.MaxValue)) return 1;
            if (result.GetValue(step) is { } st && !ImgOptions.TryCvtNum("step_size", st, out stepSize, 0, int.MaxValue)) return 1;
            if (result.GetValue(cache) is { } t)
            {
                if (!ImgOptions.IsCacheMode(t))
                {
                    Stdio.Error("Invalid cache mode");
                    return 1;
                }
                direct = t is "none" or "off" or "directsync";
                writeThrough = t is "directsync" or "writethrough";
                noFlush = t == "unsafe";
            }
            if (result.GetValue(pattern) is { } p && !TryUnsigned(p, 0xff, "Invalid pattern byte specified", out patternByte)) return 1;
            if (result.GetValue(flushInterval) is { } f && !TryUnsigned(f, int.MaxValue, "Invalid flush interval specified", out interval)) return 1;
            var names = result.GetValue(files) ?? [];
            if (names.Length != 1) return ImgOptions.ErrorExit("Expecting one image file name");
            bool isWrite = result.GetValue(write);
            if (!isWrite && interval != 0)
            {
                Stdio.Error("--flush-interval is only available in write tests");
                return 1;
            }
            if (interval != 0 && interval < queueDepth)
            {
                Stdio.Error("Flush interval can't be smaller than depth");
                return 1;
            }
            if (nativeAio && !direct)
            {
                // file-posix refuses it when the image's file is opened.
                Stdio.Error($"Could not open '{names[0]}': aio=native was specified, but it requires cache.direct=on, which was not specified.");
                return 1;
            }
            var flags = isWrite ? AccessProfiles.ImgModify : AccessProfiles.ImgRead;
            if (noFlush) flags |= OpenFlags.NoFlush;
            using var disk = ImgOpen.Open(result, names[0], result.GetValue(image.Format), result.GetValue(image.ImageOpts),
                ImgOpen.WithForceShare(flags, result.GetValue(image.ForceShare)));
            if (disk is null) return 1;

            var run = new BenchRun(disk, isWrite, (int)bufferSize, stepSize == 0 ? bufferSize : stepSize, start, queueDepth, requests,
                interval, !result.GetValue(noDrain), writeThrough ? WriteFlags.Fua : WriteFlags.None);
            Stdio.Out.Write($"Sending {requests} {(isWrite ? "write" : "read")} requests, {bufferSize} bytes each, {queueDepth} in parallel " +
                $"(starting at offset {start}, step size {(stepSize == 0 ? bufferSize : stepSize)})\n");
            if (interval != 0) Stdio.Out.Write($"Sending flush every {interval} requests\n");
            Stdio.Out.Flush();
            var watch = Stopwatch.StartNew();
            try
            {
                await run.RunAsync((byte)patternByte, ct);
            }
            catch (IOException e)
            {
                Stdio.Error($"Failed request: {(e is NativeIOException n ? NativeIOException.Describe(n.Errno) : e.Message)}");
                return 1;
            }
            Stdio.Out.Write($"Run completed in {watch.Elapsed.TotalSeconds.ToString("0.000", CultureInfo.InvariantCulture)} seconds.\n");
            Stdio.Out.Flush();
            return 0;
        });
        return command;
    }

    /// <summary>qemu_strtoul(text, NULL, 0) with a maximum; prints <paramref name="error"/> otherwise.</summary>
    private static bool TryUnsigned(string text, int max, string error, out int value)
    {
        value = 0;
        if (QemuNumber.ParseUnsigned(text, 0, out ulong n) != QemuNumberStatus.Ok || n > (ulong)max)
        {
            Stdio.Error(error);
            return false;
        }
        value = (int)n;
        return true;
    }
}

/// <summary>
/// The request loop of qemu-img bench (bench_cb): keeps up to <c>depth</c> requests in flight,
/// the next at the previous offset plus the step modulo the image size; when the number of
/// requests not yet sent is a multiple of the flush interval, flushes, after the queue drained
/// (or at once, alongside, without draining).
/// </summary>
internal sealed class BenchRun(DiskImage disk, bool write, int bufferSize, long step, long offset, int depth, int count,
    int flushInterval, bool drainOnFlush, WriteFlags writeFlags)
{
    public async Task RunAsync(byte pattern, CancellationToken ct)
    {
        var buffer = new byte[bufferSize];
        buffer.AsSpan().Fill(pattern);
        long imageSize = disk.Length;
        long next = offset;
        int remainingToComplete = count, inFlight = 0;
        var pending = new List<Task>();
        var undrainedFlushes = new List<Task>();

        void Issue()
        {
            while (remainingToComplete > inFlight && inFlight < depth)
            {
                inFlight++;
                long at = next;
                next = imageSize == 0 ? 0 : (next + step) % imageSize;
                pending.Add(RequestAsync(at));
            }
        }

        async Task RequestAsync(long at)
        {
            // blk_check_byte_request: a request past the end fails with EIO.
            if (at + bufferSize > imageSize) throw new NativeIOException(Errno.EIO, "Input/output error");
            if (write) await disk.WriteAsync(at, buffer, writeFlags, ct);
            else await disk.ReadAsync(at, buffer, ct);
        }

        Issue();
        if (depth == 0 && count > 0) await Task.Delay(Timeout.Infinite, ct); // qemu-img waits for ever, too.
        while (remainingToComplete > 0)
        {
            var done = await Task.WhenAny(pending);
            pending.Remove(done);
            await done;
            int notSent = remainingToComplete - inFlight;
            remainingToComplete--;
            inFlight--;
            if (flushInterval != 0 && notSent % flushInterval == 0)
            {
                if (drainOnFlush)
                {
                    if (inFlight == 0)
                    {
                        await disk.FlushAsync(ct);
                        Issue();
                    }
                    continue;
                }
                undrainedFlushes.Add(disk.FlushAsync(ct).AsTask());
            }
            Issue();
        }
        await Task.WhenAll(undrainedFlushes);
    }
}
