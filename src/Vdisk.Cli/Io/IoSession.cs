using System.Diagnostics;
using System.Globalization;
using Vdisk.Cli.Common;
using Vdisk.Graph;
using Vdisk.Native;
using Vdisk.Options;
using Vdisk.Permissions;

namespace Vdisk.Cli.Io;

/// <summary>
/// The qemu-io command interpreter: one image at a time, commands as qemu-io 7.2 words and
/// prints them. Each command returns 0 or a negative errno; any negative makes the exit status 1.
/// </summary>
internal sealed class IoSession : IAsyncDisposable
{
    private const long MaxRequestBytes = 2147483136; // BDRV_REQUEST_MAX_BYTES
    // Through Stdio at each use: a session whose open is refused never makes stdout's buffers.
    private static TextWriter Out => Stdio.Out;
    private readonly TextWriter _err;
    private readonly CancellationToken _cancel;
    private DiskImage? _image;
    private bool _writeThrough;
    private IoCacheMode _cache = IoCacheMode.Default;

    /// <summary>
    /// The reports of aio requests that completed but were not yet reported: qemu-io prints them
    /// from its completion callbacks, which run when a later command waits for I/O.
    /// </summary>
    private readonly System.Text.StringBuilder _aioReports = new();

    /// <summary>
    /// aio requests still running (held at a blkdebug breakpoint, or waiting behind one): their
    /// reports join <see cref="_aioReports"/> when they finish; aio_flush and close wait for them.
    /// </summary>
    private readonly List<Task> _inflight = new();

    /// <summary>Writes since the last flush: closing the image flushes them, as bdrv_close does.</summary>
    private bool _unflushed;

    public IoSession(CancellationToken cancel)
    {
        _cancel = cancel;
        _err = new ErrorWriter();
        // blkdebug's "Suspended request" lines are printf()s between qemu-io's own.
        Vdisk.Drivers.Blkdebug.BlkdebugNode.SuspendReports = Out;
    }

    public bool QuitRequested { get; private set; }

    public DiskImage? Image => _image;

    /// <summary>Wraps every open (the <c>--wait</c> option queues on lock conflicts); null opens directly.</summary>
    public Func<Func<DiskImage>, DiskImage>? OpenWrapper { get; init; }

    /// <summary>The cluster-lock settings of the run's <c>--cluster</c> (null: the <c>VDISK_ETCD_*</c> environment).</summary>
    public Locking.Cluster.ClusterLockSettings? ClusterLocks { get; init; }

    /// <summary>The command line's --image-opts: the open command then reads its path operand as options, as qemu-io's open_f does.</summary>
    public bool ImageOpts { get; init; }

    /// <summary>
    /// Called once the session holds what a signal's default action would lose: before a command
    /// that writes or resizes, after an open whose reads can write (copy-on-read, quorum's
    /// rewrite-corrupted), and after an open or command that wrote below the image (persistent
    /// bitmaps marked in use, a repaired header).
    /// Until then SIGINT and SIGTERM kill vdisk io as they kill qemu-io and the kernel drops the
    /// locks, so a run that only reads never starts the runtime's signal handling (its thread
    /// costs about a tenth of a one-shot read).
    /// </summary>
    public Action? CleanEndNeeded { get; init; }

    private bool _cleanEndArmed;

    private void NeedCleanEnd()
    {
        if (_cleanEndArmed) return;
        _cleanEndArmed = true;
        CleanEndNeeded?.Invoke();
    }

    /// <summary>Asks for a clean end once the open image has something to lose.</summary>
    private void NoteImageState()
    {
        if (_cleanEndArmed || _image is not { } image) return;
        if (image.ReadsMayWrite || !image.HasWrittenNothing) NeedCleanEnd();
    }

    /// <summary>Opens the image given on the command line or to the <c>open</c> command.</summary>
    public bool OpenImage(ImageSource source, OpenFlags flags, IoCacheMode cache)
    {
        if (_image is not null)
        {
            Stdio.Error("file open already, try 'help close'");
            return false;
        }
        try
        {
            if (cache.NoFlush) flags |= OpenFlags.NoFlush;
            if (cache.Direct) flags |= OpenFlags.NoCache;
            Graph.BlockGraph NewGraph() => new() { ClusterLocks = ClusterLocks };
            if (OpenWrapper is not null) _image = OpenWrapper(() => DiskImage.Open(source, flags, graph: NewGraph()));
            else if (DiskImage.TryOpen(source, flags, out _image, graph: NewGraph()) is { } conflict)
            {
                // The usual refusal, reported without throwing it (see DiskImage.TryOpen).
                ReportOpenFailure(source, Stdio.Describe(conflict) ?? conflict.Message);
                return false;
            }
            _writeThrough = cache.WriteThrough;
            _cache = cache;
            NoteImageState();
            return true;
        }
        catch (OperationCanceledException)
        {
            return false; // a signal ended --wait; the exit status says which
        }
        catch (Exception e) when (Stdio.Describe(e) is { } text)
        {
            ReportOpenFailure(source, text);
            return false;
        }
    }

    private static void ReportOpenFailure(ImageSource source, string text) =>
        Stdio.Error(source.DisplayName is { } name ? $"can't open device {name}: {text}" : $"can't open: {text}");

    /// <summary>Runs one command line; returns 0 or a negative errno.</summary>
    public async Task<int> RunAsync(string line)
    {
        // breakline: words are separated by spaces only (a tab is part of a word).
        var words = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        if (words.Length == 0) return 0;
        var info = IoCommandTable.Find(words[0]);
        if (info is null)
        {
            _err.Write($"command \"{words[0]}\" not found\n");
            return -Errno.EINVAL;
        }
        if (!info.Global && !info.NoFileOk && _image is null)
        {
            _err.Write("no file open, try 'help open'\n");
            return -Errno.EINVAL;
        }
        if (!CheckPermission(info)) return -Errno.EINVAL;
        int argc = words.Length - 1;
        if (argc < info.ArgMin || (info.ArgMax >= 0 && argc > info.ArgMax))
        {
            string expected = info.ArgMax == -1 ? $"at least {info.ArgMin} arguments"
                : info.ArgMin == info.ArgMax ? $"{info.ArgMin} arguments"
                : $"between {info.ArgMin} and {info.ArgMax} arguments";
            _err.Write($"bad argument count {argc} to {info.Name}, expected {expected}\n");
            return -Errno.EINVAL;
        }
        if (info.Polls) DeliverAioReports();
        if ((info.Permission & (BlockPermission.Write | BlockPermission.Resize)) != 0) NeedCleanEnd();
        try
        {
            return await info.Run(this, words);
        }
        finally
        {
            Out.Flush();
            NoteImageState();
        }
    }

    /// <summary>init_check_command: take the permission a command needs if the image lacks it.</summary>
    private bool CheckPermission(IoCommandInfo info)
    {
        if (_image is null || info.Permission == BlockPermission.None) return true;
        var current = _image.Permissions;
        if ((info.Permission & ~current.Perm) == 0) return true;
        try
        {
            _image.SetPermissions(current with { Perm = current.Perm | info.Permission });
            return true;
        }
        catch (Exception e) when (Stdio.Describe(e) is { } text)
        {
            Stdio.Error(text);
            return false;
        }
    }

    /// <summary>getopt over a command's words; null (after glibc's message, named by the command word) on a bad option.</summary>
    private (List<(char Option, string? Value)> Options, List<string> Operands)? ParseOptions(string[] words, string spec)
    {
        var parsed = GetOpt.FromShortSpec(spec).Parse(words, start: 1);
        if (parsed.Error is { } error)
        {
            _err.Write($"{words[0]}: {error.GlibcMessage}\n");
            return null;
        }
        // A loop, not LINQ: Select over tuples is a generic instantiation that every command's
        // first run would fault in (2% of `vdisk io -c 'read 0 4k'`).
        var options = new List<(char Option, string? Value)>(parsed.Options.Count);
        foreach (var (option, value) in parsed.Options) options.Add((option.Short!.Value, value));
        return (options, parsed.Operands);
    }

    private void Usage(string name) => Out.Write(IoCommandTable.HelpLine(IoCommandTable.Find(name)!) + "\n");

    private bool TryNumber(string arg, out long value)
    {
        value = QemuIoFormat.ParseNumber(arg);
        if (value >= 0) return true;
        Out.Write(QemuIoFormat.NumberError(value, arg) + "\n");
        return false;
    }

    /// <summary>parse_pattern: strtol, then one byte.</summary>
    private bool TryPattern(string arg, out byte pattern)
    {
        pattern = 0;
        if (!QemuIoFormat.TryParseStrtol(arg, out long v) || v is < 0 or > 255)
        {
            Out.Write($"{arg} is not a valid pattern byte\n");
            return false;
        }
        pattern = (byte)v;
        return true;
    }

    internal async Task<int> ReadAsync(string[] words)
    {
        var parsed = ParseOptions(words, "bCl:pP:qs:v");
        if (parsed is null) { Usage("read"); return -Errno.EINVAL; }
        bool machine = false, quiet = false, dump = false, verify = false, vmState = false;
        byte pattern = 0;
        long patternOffset = 0, patternCount = 0;
        bool sFlag = false, lFlag = false;
        foreach (var (opt, value) in parsed.Value.Options)
        {
            switch (opt)
            {
                case 'b': vmState = true; break;
                case 'C': machine = true; break;
                case 'p': break; // ignored, as in qemu-io
                case 'q': quiet = true; break;
                case 'v': dump = true; break;
                case 'P':
                    verify = true;
                    if (!TryPattern(value!, out pattern)) return -Errno.EINVAL;
                    break;
                case 's':
                    sFlag = true;
                    if (!TryNumber(value!, out patternOffset)) return -Errno.EINVAL;
                    break;
                case 'l':
                    lFlag = true;
                    if (!TryNumber(value!, out patternCount)) return -Errno.EINVAL;
                    break;
            }
        }
        var operands = parsed.Value.Operands;
        if (operands.Count != 2) { Usage("read"); return -Errno.EINVAL; }
        if (!TryNumber(operands[0], out long offset)) return -Errno.EINVAL;
        if (!TryNumber(operands[1], out long count)) return -Errno.EINVAL;
        if (count > MaxRequestBytes)
        {
            Out.Write($"length cannot exceed {MaxRequestBytes}, given {operands[1]}\n");
            return -Errno.EINVAL;
        }
        if (!verify && (sFlag || lFlag)) { Usage("read"); return -Errno.EINVAL; }
        if (!lFlag) patternCount = count - patternOffset;
        // Compared without overflow: qemu-io's sum wraps for huge -s/-l and it then aborts
        // allocating the comparison buffer; here such a range is simply out of range.
        if (patternCount < 0 || patternOffset > count || patternCount > count - patternOffset)
        {
            Out.Write("pattern verification range exceeds end of read data\n");
            return -Errno.EINVAL;
        }
        if (vmState && (!SectorAligned(offset, "offset") || !SectorAligned(count, "count"))) return -Errno.EINVAL;

        var buffer = GC.AllocateUninitializedArray<byte>((int)count);
        var watch = Stopwatch.StartNew();
        try
        {
            if (vmState) await _image!.LoadVmStateAsync(offset, buffer, _cancel);
            else await _image!.ReadAsync(offset, buffer, _cancel);
        }
        catch (IOException e)
        {
            Out.Write($"read failed: {ErrorText(e)}\n");
            return -ErrnoOf(e);
        }
        watch.Stop();
        int ret = 0;
        if (verify && buffer.AsSpan((int)patternOffset, (int)patternCount).IndexOfAnyExcept(pattern) >= 0)
        {
            Out.Write($"Pattern verification failed at offset {offset + patternOffset}, {patternCount} bytes\n");
            ret = -Errno.EINVAL;
        }
        if (quiet) return ret;
        if (dump) QemuIoFormat.Dump(Out, buffer, offset);
        QemuIoFormat.Report(Out, "read", watch.Elapsed, offset, count, count, 1, machine);
        return ret;
    }

    /// <summary>The alignment check of -b (VM state) and -c (compressed) requests.</summary>
    private bool SectorAligned(long value, string what)
    {
        if (value % 512 == 0) return true;
        Out.Write($"{value} is not a sector-aligned value for '{what}'\n");
        return false;
    }

    internal async Task<int> WriteAsync(string[] words)
    {
        var parsed = ParseOptions(words, "bcCfnpP:qs:uz");
        if (parsed is null) { Usage("write"); return -Errno.EINVAL; }
        bool machine = false, quiet = false, zero = false, unmap = false, fua = false, hasPattern = false, compressed = false, noFallback = false, vmState = false;
        string? source = null;
        byte pattern = 0xcd;
        foreach (var (opt, value) in parsed.Value.Options)
        {
            switch (opt)
            {
                case 'b': vmState = true; break;
                case 'C': machine = true; break;
                case 'q': quiet = true; break;
                case 'z': zero = true; break;
                case 'u': unmap = true; break;
                case 'f': fua = true; break;
                case 'c': compressed = true; break;
                case 'n': noFallback = true; break;
                case 'p': break; // ignored, as in qemu-io
                case 's': source = value; break;
                case 'P':
                    hasPattern = true;
                    if (!TryPattern(value!, out pattern)) return -Errno.EINVAL;
                    break;
            }
        }
        var operands = parsed.Value.Operands;
        if (operands.Count != 2) { Usage("write"); return -Errno.EINVAL; }
        string? conflict =
            vmState && zero ? "-b and -z cannot be specified at the same time"
            : fua && (vmState || compressed) ? "-f and -b or -c cannot be specified at the same time"
            : noFallback && !zero ? "-n requires -z to be specified"
            : unmap && !zero ? "-u requires -z to be specified"
            : (zero ? 1 : 0) + (hasPattern ? 1 : 0) + (source is not null ? 1 : 0) > 1 ? "Only one of -z, -P, and -s can be specified at the same time"
            : null;
        if (conflict is not null)
        {
            Out.Write(conflict + "\n");
            return -Errno.EINVAL;
        }
        if (!TryNumber(operands[0], out long offset)) return -Errno.EINVAL;
        if (!TryNumber(operands[1], out long count)) return -Errno.EINVAL;
        if (count > MaxRequestBytes && !noFallback)
        {
            Out.Write($"length cannot exceed {MaxRequestBytes} without -n, given {operands[1]}\n");
            return -Errno.EINVAL;
        }
        if ((vmState || compressed) && (!SectorAligned(offset, "offset") || !SectorAligned(count, "count"))) return -Errno.EINVAL;

        byte[]? data = null;
        if (!zero)
        {
            if (source is not null)
            {
                data = await ReadPatternFileAsync(source, count);
                if (data is null) return -Errno.EINVAL;
            }
            else
            {
                data = GC.AllocateUninitializedArray<byte>((int)count);
                data.AsSpan().Fill(pattern);
            }
        }
        // Write-through (qemu-io's default cache mode) makes every write a FUA write.
        fua |= _writeThrough;
        var watch = Stopwatch.StartNew();
        try
        {
            if (vmState)
            {
                await _image!.SaveVmStateAsync(offset, data, _cancel);
                // blk_save_vmstate flushes when the write cache is off (write-through).
                if (_writeThrough) await _image!.FlushAsync(_cancel);
            }
            else if (zero)
            {
                var flags = (unmap ? ZeroFlags.MayUnmap : 0) | (noFallback ? ZeroFlags.NoFallback : 0) | (fua ? ZeroFlags.Fua : 0);
                await _image!.WriteZeroesAsync(offset, count, flags, _cancel);
            }
            else if (compressed)
            {
                await _image!.WriteCompressedAsync(offset, data, _cancel);
            }
            else
            {
                await _image!.WriteAsync(offset, data, fua ? WriteFlags.Fua : WriteFlags.None, _cancel);
            }
            _unflushed = !fua;
        }
        catch (IOException e)
        {
            Out.Write($"write failed: {ErrorText(e)}\n");
            return -ErrnoOf(e);
        }
        watch.Stop();
        if (!quiet) QemuIoFormat.Report(Out, "wrote", watch.Elapsed, offset, count, count, 1, machine);
        return 0;
    }

    /// <summary>
    /// write -s: up to <paramref name="count"/> bytes of the file, repeated to fill the buffer
    /// when the file is shorter (qemu_io_alloc_from_file). Null, after perror-style
    /// <c>FILE: reason</c> on stderr, when it cannot be read or is empty.
    /// </summary>
    private async Task<byte[]?> ReadPatternFileAsync(string path, long count)
    {
        var data = GC.AllocateUninitializedArray<byte>((int)count);
        int length = 0;
        try
        {
            // A pattern source, not an image: read without locks and without the block
            // layer's rounding to whole sectors.
            length = await HostFile.ReadPrefixAsync(path, data, _cancel);
        }
        catch (NativeIOException e)
        {
            _err.Write($"{path}: {NativeIOException.Describe(e.Errno)}\n");
            return null;
        }
        catch (IOException e)
        {
            _err.Write($"{path}: {e.Message}\n");
            return null;
        }
        if (length == 0 && count > 0)
        {
            _err.Write($"{path}: file is empty\n");
            return null;
        }
        for (int filled = length; filled < data.Length; filled += length)
            data.AsSpan(0, Math.Min(length, data.Length - filled)).CopyTo(data.AsSpan(filled));
        return data;
    }

    /// <summary>The completion reports of earlier aio requests, as qemu-io's event loop prints them.</summary>
    private void DeliverAioReports()
    {
        string text;
        lock (_aioReports)
        {
            if (_aioReports.Length == 0) return;
            text = _aioReports.ToString();
            _aioReports.Clear();
        }
        Out.Write(text);
    }

    /// <summary>
    /// Runs an aio request: one that completes at once is reported like before; one that waits
    /// (at a blkdebug breakpoint) keeps running while the next commands do, as in qemu-io.
    /// </summary>
    private void StartAio(Func<TextWriter, Task> request)
    {
        var output = new StringWriter();
        var task = request(output);
        if (task.IsCompleted)
        {
            task.GetAwaiter().GetResult();
            lock (_aioReports) _aioReports.Append(output.ToString());
            return;
        }
        var reported = task.ContinueWith(t =>
        {
            lock (_aioReports) _aioReports.Append(output.ToString());
        }, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        lock (_inflight) _inflight.Add(reported);
    }

    /// <summary>
    /// Whether an aio request is still running (held at a blkdebug breakpoint, say); asked from
    /// the signal handler's thread, hence the lock around the list.
    /// </summary>
    internal bool HasRequestsInFlight
    {
        get
        {
            lock (_inflight) return _inflight.Exists(t => !t.IsCompleted);
        }
    }

    /// <summary>blk_drain_all: waits for every running aio request.</summary>
    private async Task DrainAsync()
    {
        while (_inflight.Count > 0)
        {
            Task[] pending;
            lock (_inflight)
            {
                pending = _inflight.ToArray();
                _inflight.Clear();
            }
            // A request held at a breakpoint forever must not keep a signalled qemu-io alive.
            try
            {
                await Task.WhenAll(pending).WaitAsync(_cancel);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }

    /// <summary>The blkdebug node bdrv_debug_* reach: the first one down the primary children.</summary>
    private Vdisk.Drivers.Blkdebug.BlkdebugNode? DebugNode()
    {
        for (var node = _image?.Root; node is not null; node = node.PrimaryChild?.Node)
        {
            if (node is Vdisk.Drivers.Blkdebug.BlkdebugNode blkdebug) return blkdebug;
        }
        return null;
    }

    /// <summary>break EVENT TAG: the next request reaching EVENT is suspended under TAG.</summary>
    internal int Break(string[] words)
    {
        var node = DebugNode();
        int errno = node is null ? Errno.ENOTSUP : node.AddBreakpoint(words[1], words[2]) ? 0 : Errno.ENOENT;
        if (errno == 0) return 0;
        Out.Write($"Could not set breakpoint: {NativeIOException.Describe(errno)}\n");
        return -errno;
    }

    /// <summary>remove_break TAG: drops the breakpoints named TAG and resumes requests held there.</summary>
    internal int RemoveBreak(string[] words)
    {
        var node = DebugNode();
        int errno = node is null ? Errno.ENOTSUP : node.RemoveBreakpoint(words[1]) ? 0 : Errno.ENOENT;
        if (errno == 0) return 0;
        Out.Write($"Could not remove breakpoint {words[1]}: {NativeIOException.Describe(errno)}\n");
        return -errno;
    }

    /// <summary>resume TAG: lets the request held under TAG go on.</summary>
    internal int Resume(string[] words)
    {
        var node = DebugNode();
        int errno = node is null ? Errno.ENOTSUP : node.Resume(words[1]) ? 0 : Errno.ENOENT;
        if (errno == 0) return 0;
        Out.Write($"Could not resume request: {NativeIOException.Describe(errno)}\n");
        return -errno;
    }

    /// <summary>
    /// wait_break TAG: waits until a request is held under TAG. qemu-io would wait forever when
    /// none can get there; vdisk stops waiting once no aio request is left running.
    /// </summary>
    internal async Task<int> WaitBreakAsync(string[] words)
    {
        var node = DebugNode();
        if (node is null) return 0;
        while (!node.IsSuspended(words[1]))
        {
            Task[] running;
            lock (_inflight)
            {
                _inflight.RemoveAll(t => t.IsCompleted);
                running = _inflight.ToArray();
            }
            if (running.Length == 0) return 0;
            await Task.WhenAny(node.NextSuspensionAsync(), Task.WhenAny(running)).WaitAsync(_cancel);
        }
        return 0;
    }

    /// <summary>
    /// create_iovec: the lengths of a vectored request, each a size no larger than one request,
    /// their sum no larger either. Null after qemu-io's message.
    /// </summary>
    private long? SumLengths(IReadOnlyList<string> operands, int first)
    {
        long total = 0;
        for (int i = first; i < operands.Count; i++)
        {
            if (!TryNumber(operands[i], out long length)) return null;
            if (length > MaxRequestBytes)
            {
                Out.Write($"Argument '{operands[i]}' exceeds maximum size {MaxRequestBytes}\n");
                return null;
            }
            if (total > MaxRequestBytes - length)
            {
                Out.Write($"The total number of bytes exceed the maximum size {MaxRequestBytes}\n");
                return null;
            }
            total += length;
        }
        return total;
    }

    /// <summary>
    /// readv and aio_read: one read into as many buffers as lengths. aio_read's report (and any
    /// failure) waits for the next command that polls, and never fails the command itself.
    /// </summary>
    internal async Task<int> ReadVectorAsync(string[] words, bool aio)
    {
        string name = aio ? "aio_read" : "readv";
        var parsed = ParseOptions(words, aio ? "CP:iqv" : "CP:qv");
        if (parsed is null) { Usage(name); return -Errno.EINVAL; }
        bool machine = false, quiet = false, dump = false, verify = false;
        byte pattern = 0;
        foreach (var (opt, value) in parsed.Value.Options)
        {
            switch (opt)
            {
                case 'C': machine = true; break;
                case 'q': quiet = true; break;
                case 'v': dump = true; break;
                case 'i':
                    // Only counts an invalid request in the statistics, which vdisk io does not keep.
                    Out.Write("injecting invalid read request\n");
                    return 0;
                case 'P':
                    verify = true;
                    if (!TryPattern(value!, out pattern)) return -Errno.EINVAL;
                    break;
            }
        }
        var operands = parsed.Value.Operands;
        if (operands.Count < 2) { Usage(name); return -Errno.EINVAL; }
        if (!TryNumber(operands[0], out long offset)) return -Errno.EINVAL;
        if (SumLengths(operands, 1) is not { } count) return -Errno.EINVAL;

        if (aio)
        {
            StartAio(output => ReadVectorBodyAsync(output, offset, count, verify, pattern, quiet, dump, machine));
            return 0;
        }
        return await ReadVectorBodyAsync(Out, offset, count, verify, pattern, quiet, dump, machine);
    }

    private async Task<int> ReadVectorBodyAsync(TextWriter output, long offset, long count, bool verify, byte pattern, bool quiet, bool dump, bool machine)
    {
        var buffer = GC.AllocateUninitializedArray<byte>((int)count);
        var watch = Stopwatch.StartNew();
        int ret = 0;
        try
        {
            await _image!.ReadAsync(offset, buffer, _cancel);
            watch.Stop();
            if (verify && buffer.AsSpan().IndexOfAnyExcept(pattern) >= 0)
            {
                output.Write($"Pattern verification failed at offset {offset}, {count} bytes\n");
                ret = -Errno.EINVAL;
            }
            if (!quiet)
            {
                if (dump) QemuIoFormat.Dump(output, buffer, offset);
                QemuIoFormat.Report(output, "read", watch.Elapsed, offset, count, count, 1, machine);
            }
        }
        catch (IOException e)
        {
            output.Write($"readv failed: {ErrorText(e)}\n");
            ret = -ErrnoOf(e);
        }
        return ret;
    }

    /// <summary>
    /// writev and aio_write: one write from as many buffers as lengths (aio_write -z: zeroes, one
    /// length). aio_write's report waits for the next command that polls.
    /// </summary>
    internal async Task<int> WriteVectorAsync(string[] words, bool aio)
    {
        string name = aio ? "aio_write" : "writev";
        var parsed = ParseOptions(words, aio ? "CfiqP:uz" : "CfqP:");
        if (parsed is null) { Usage(name); return -Errno.EINVAL; }
        bool machine = false, quiet = false, fua = false, unmap = false, zero = false;
        byte pattern = 0xcd;
        foreach (var (opt, value) in parsed.Value.Options)
        {
            switch (opt)
            {
                case 'C': machine = true; break;
                case 'q': quiet = true; break;
                case 'f': fua = true; break;
                case 'u': unmap = true; break;
                case 'z': zero = true; break;
                case 'i':
                    Out.Write("injecting invalid write request\n");
                    return 0;
                case 'P':
                    if (!TryPattern(value!, out pattern)) return -Errno.EINVAL;
                    break;
            }
        }
        var operands = parsed.Value.Operands;
        if (operands.Count < 2) { Usage(name); return -Errno.EINVAL; }
        if (zero && operands.Count != 2)
        {
            Out.Write("-z supports only a single length parameter\n");
            return -Errno.EINVAL;
        }
        if (unmap && !zero)
        {
            Out.Write("-u requires -z to be specified\n");
            return -Errno.EINVAL;
        }
        if (!TryNumber(operands[0], out long offset)) return -Errno.EINVAL;
        long count;
        if (zero)
        {
            if (!TryNumber(operands[1], out count)) return -Errno.EINVAL;
        }
        else if (SumLengths(operands, 1) is { } sum) count = sum;
        else return -Errno.EINVAL;

        fua |= _writeThrough;
        if (aio)
        {
            StartAio(output => WriteVectorBodyAsync(output, name, offset, count, zero, unmap, fua, pattern, quiet, machine));
            return 0;
        }
        return await WriteVectorBodyAsync(Out, name, offset, count, zero, unmap, fua, pattern, quiet, machine);
    }

    private async Task<int> WriteVectorBodyAsync(TextWriter output, string name, long offset, long count, bool zero, bool unmap, bool fua, byte pattern, bool quiet, bool machine)
    {
        var watch = Stopwatch.StartNew();
        int ret = 0;
        try
        {
            if (zero)
            {
                var flags = (unmap ? ZeroFlags.MayUnmap : 0) | (fua ? ZeroFlags.Fua : 0);
                await _image!.WriteZeroesAsync(offset, count, flags, _cancel);
            }
            else
            {
                var data = GC.AllocateUninitializedArray<byte>((int)count);
                data.AsSpan().Fill(pattern);
                await _image!.WriteAsync(offset, data, fua ? WriteFlags.Fua : WriteFlags.None, _cancel);
            }
            _unflushed = !fua;
            watch.Stop();
            if (!quiet) QemuIoFormat.Report(output, "wrote", watch.Elapsed, offset, count, count, 1, machine);
        }
        catch (IOException e)
        {
            output.Write($"{name} failed: {ErrorText(e)}\n");
            ret = -ErrnoOf(e);
        }
        return ret;
    }

    /// <summary>aio_flush: waits for every outstanding request (blk_drain_all); their reports come first.</summary>
    internal async Task<int> AioFlushAsync()
    {
        await DrainAsync();
        DeliverAioReports();
        return 0;
    }

    /// <summary>
    /// alloc: how many of <c>count</c> bytes (default one sector) from <c>offset</c> the image's own
    /// layer allocates; a range past the end counts only up to the end.
    /// </summary>
    internal async Task<int> AllocAsync(string[] words)
    {
        if (!TryNumber(words[1], out long offset)) return -Errno.EINVAL;
        long count = 512;
        if (words.Length == 3 && !TryNumber(words[2], out count)) return -Errno.EINVAL;
        long length = _image!.Length;
        count = offset >= length ? 0 : Math.Min(count, length - offset);
        long allocated = 0;
        try
        {
            if (count > 0)
            {
                await foreach (var extent in _image.ExtentsAsync(offset, count, ExtentScope.Node, cancellationToken: _cancel))
                {
                    if ((extent.Flags & BlockStatusFlags.Allocated) == 0) continue;
                    long start = Math.Max(extent.Offset, offset);
                    long end = Math.Min(extent.Offset + extent.Length, offset + count);
                    if (end > start) allocated += end - start;
                }
            }
        }
        catch (IOException e)
        {
            Out.Write($"is_allocated failed: {ErrorText(e)}\n");
            return -ErrnoOf(e);
        }
        Out.Write($"{allocated}/{count} bytes allocated at offset {QemuIoFormat.Size(offset)}\n");
        return 0;
    }

    /// <summary>
    /// reopen: read-only or read-write (-r/-w or -o read-only=), the cache mode (-c or
    /// -o cache.direct/cache.no-flush). Dropping to read-only first gives up the write permission,
    /// so later writes fail with "Block node is read-only".
    /// </summary>
    internal Task<int> ReopenAsync(string[] words)
    {
        var parsed = ParseOptions(words, "c:o:rw");
        if (parsed is null) { Usage("reopen"); return Task.FromResult(-Errno.EINVAL); }
        bool readOnly = (_image!.Root.Flags & NodeFlags.ReadWrite) == 0;
        bool hasReadWriteOption = false, hasCacheOption = false;
        var cache = _cache;
        var options = new Dictionary<string, string?>(StringComparer.Ordinal);
        foreach (var (opt, value) in parsed.Value.Options)
        {
            switch (opt)
            {
                case 'c':
                    if (IoCacheMode.Parse(value!) is not { } mode)
                    {
                        Stdio.Error("Invalid cache option: " + value);
                        return Task.FromResult(-Errno.EINVAL);
                    }
                    cache = mode;
                    hasCacheOption = true;
                    break;
                case 'o':
                    try
                    {
                        foreach (var (k, v) in KeyValParser.Parse(value!, KeyValDialect.QemuOpts).Flatten()) options[k] = (v as OptionScalar)?.Text;
                    }
                    catch (OptionException e)
                    {
                        Stdio.Error(e.Message);
                        return Task.FromResult(-Errno.EINVAL);
                    }
                    break;
                case 'r':
                case 'w':
                    if (hasReadWriteOption)
                    {
                        Stdio.Error("Only one -r/-w option may be given");
                        return Task.FromResult(-Errno.EINVAL);
                    }
                    readOnly = opt == 'r';
                    hasReadWriteOption = true;
                    break;
            }
        }
        if (parsed.Value.Operands.Count != 0) { Usage("reopen"); return Task.FromResult(-Errno.EINVAL); }
        foreach (var key in options.Keys)
        {
            string? error = key switch
            {
                "read-only" when hasReadWriteOption => "Cannot set both -r/-w and 'read-only'",
                "cache.direct" or "cache.no-flush" when hasCacheOption => "Cannot set both -c and the cache options",
                _ => null,
            };
            if (error is not null)
            {
                Stdio.Error(error);
                return Task.FromResult(-Errno.EINVAL);
            }
        }
        var prepared = new List<BlockNode>();
        if (Reopen.PrepareOptions(_image.Root, options, prepared) is { } refused)
        {
            Reopen.Abort(prepared);
            Stdio.Error(refused);
            return Task.FromResult(-Errno.EINVAL);
        }
        // Only -r gives up the write permission first (as reopen_f drops it for a read-only flag):
        // "-o read-only=on" with a writer attached fails.
        bool dropWrite = readOnly;
        if (options.ContainsKey("read-only")) ParseOnOff(options, "read-only", out readOnly);
        if (options.ContainsKey("cache.direct")) { ParseOnOff(options, "cache.direct", out bool direct); cache = cache with { Direct = direct }; }
        if (options.ContainsKey("cache.no-flush")) { ParseOnOff(options, "cache.no-flush", out bool noFlush); cache = cache with { NoFlush = noFlush }; }
        try
        {
            if (dropWrite)
            {
                var current = _image.Permissions;
                _image.SetPermissions(current with { Perm = current.Perm & ~(BlockPermission.Write | BlockPermission.WriteUnchanged) });
            }
            Reopen.SetReadOnly(_image.Root, readOnly);
            Reopen.Commit(prepared);
        }
        catch (Exception e) when (Stdio.Describe(e) is { } text)
        {
            Reopen.Abort(prepared);
            Stdio.Error(text);
            return Task.FromResult(-Errno.EINVAL);
        }
        _cache = cache;
        _writeThrough = cache.WriteThrough;
        return Task.FromResult(0);
    }

    /// <summary>A boolean reopen option: null when it is on or off, else QEMU's message.</summary>
    private static string? ParseOnOff(Dictionary<string, string?> options, string key, out bool value)
    {
        value = false;
        switch (options[key])
        {
            case "on": value = true; return null;
            case "off": return null;
            default: return $"Parameter '{key}' expects 'on' or 'off'";
        }
    }

    /// <summary>abort: ends the process with SIGABRT; output still buffered is lost, as in qemu-io.</summary>
    internal int Abort()
    {
        ProcessSignals.Abort();
        return 0;
    }

    /// <summary>sigraise: flushes the output, then raises the signal with its default action.</summary>
    internal int SigRaise(string[] words)
    {
        if (!TryNumber(words[1], out long signal)) return -Errno.EINVAL;
        if (signal > ProcessSignals.Highest + 1)
        {
            Out.Write($"signal argument '{words[1]}' is too large to be a valid signal\n");
            return -Errno.EINVAL;
        }
        Out.Flush();
        if (!ProcessSignals.QemuIoSurvives((int)signal)) ProcessSignals.RaiseWithDefaultAction((int)signal);
        return 0;
    }

    internal async Task<int> DiscardAsync(string[] words)
    {
        var parsed = ParseOptions(words, "Cq");
        if (parsed is null) { Usage("discard"); return -Errno.EINVAL; }
        bool machine = parsed.Value.Options.Any(o => o.Option == 'C');
        bool quiet = parsed.Value.Options.Any(o => o.Option == 'q');
        var operands = parsed.Value.Operands;
        if (operands.Count != 2) { Usage("discard"); return -Errno.EINVAL; }
        if (!TryNumber(operands[0], out long offset)) return -Errno.EINVAL;
        if (!TryNumber(operands[1], out long count)) return -Errno.EINVAL;
        if (count > MaxRequestBytes)
        {
            Out.Write($"length cannot exceed {MaxRequestBytes}, given {operands[1]}\n");
            return -Errno.EINVAL;
        }
        var watch = Stopwatch.StartNew();
        try
        {
            await _image!.DiscardAsync(offset, count, _cancel);
            _unflushed = true;
        }
        catch (IOException e)
        {
            Out.Write($"discard failed: {ErrorText(e)}\n");
            return -ErrnoOf(e);
        }
        watch.Stop();
        if (!quiet) QemuIoFormat.Report(Out, "discard", watch.Elapsed, offset, count, count, 1, machine);
        return 0;
    }

    /// <summary>flush: qemu-io reports a failure only through its exit status.</summary>
    internal async Task<int> FlushAsync()
    {
        try
        {
            await _image!.FlushAsync(_cancel);
            _unflushed = false;
            return 0;
        }
        catch (IOException e)
        {
            return -ErrnoOf(e);
        }
    }

    internal async Task<int> TruncateAsync(string[] words)
    {
        var parsed = ParseOptions(words, "m:");
        if (parsed is null || parsed.Value.Operands.Count == 0) { Usage("truncate"); return -Errno.EINVAL; }
        var mode = Preallocation.Off;
        foreach (var (_, value) in parsed.Value.Options)
        {
            Preallocation? m = value switch
            {
                "off" => Preallocation.Off,
                "metadata" => Preallocation.Metadata,
                "falloc" => Preallocation.Falloc,
                "full" => Preallocation.Full,
                _ => null,
            };
            if (m is null)
            {
                Stdio.Error($"Invalid preallocation mode '{value}'");
                return -Errno.EINVAL;
            }
            mode = m.Value;
        }
        // qemu-io takes the first operand and ignores any others.
        if (!TryNumber(parsed.Value.Operands[0], out long size)) return -Errno.EINVAL;
        try
        {
            await _image!.TruncateAsync(size, mode, _cancel);
            _unflushed = true;
            return 0;
        }
        catch (NativeIOException e) when (e.Errno == Errno.ENOTSUP && mode == Preallocation.Metadata)
        {
            // A format without metadata preallocation refuses it in file-posix's words, as qemu-io prints them.
            Stdio.Error(e.Message);
            return -e.Errno;
        }
        catch (IOException e)
        {
            Stdio.Error(ErrorText(e));
            return -ErrnoOf(e);
        }
    }

    internal int Length()
    {
        Out.Write(QemuIoFormat.Size(_image!.Length) + "\n");
        return 0;
    }

    internal int Info()
    {
        var root = _image!.Root;
        var info = ImageInfo.Collect(root);
        Out.Write($"format name: {info.Format}\n");
        // info_f prints a protocol driver's protocol_name under the same label.
        if (root.IsProtocol) Out.Write($"format name: {root.DriverName}\n");
        // bdrv_get_info fails for drivers without it (null-co, nbd): nothing more is printed.
        if (!root.HasDriverInfo) return -Errno.ENOTSUP;
        Out.Write($"cluster size: {QemuIoFormat.Size(info.ClusterSize ?? 0)}\n");
        Out.Write($"vm state offset: {QemuIoFormat.Size(info.VmStateOffset)}\n");
        if (Cli.Info.ImageInfoText.FormatSpecific(info) is { Length: > 0 } specific) Out.Write("Format specific information:\n" + specific);
        return 0;
    }

    internal async Task<int> MapAsync()
    {
        // map_is_allocated: one line per run of equal allocation on the image's own layer.
        long start = 0, run = 0;
        bool allocated = false;
        try
        {
            await foreach (var extent in _image!.ExtentsAsync(0, _image.Length, ExtentScope.Node, cancellationToken: _cancel))
            {
                bool a = (extent.Flags & BlockStatusFlags.Allocated) != 0;
                if (run > 0 && a != allocated)
                {
                    WriteMapLine(start, run, allocated);
                    start = extent.Offset;
                    run = 0;
                }
                allocated = a;
                run += extent.Length;
            }
            if (run > 0) WriteMapLine(start, run, allocated);
        }
        catch (NativeIOException e) when (e.Message == BlockExtents.UnexpectedEnd)
        {
            // map_f: the run so far, then its own message for a 0-byte answer.
            if (run > 0) WriteMapLine(start, run, allocated);
            Stdio.Error(BlockExtents.UnexpectedEnd);
            return -Errno.EIO;
        }
        catch (IOException e)
        {
            Stdio.Error($"Failed to get allocation status: {ErrorText(e)}");
            return -ErrnoOf(e);
        }
        return 0;
    }

    private void WriteMapLine(long offset, long run, bool allocated)
    {
        string state = allocated ? "    allocated" : "not allocated";
        Out.Write(string.Create(CultureInfo.InvariantCulture,
            $"{QemuIoFormat.Size(run)} (0x{run:x}) bytes {state} at offset {QemuIoFormat.Size(offset)} (0x{offset:x})\n"));
    }

    internal async Task<int> SleepAsync(string[] words)
    {
        string arg = words[1];
        if (!QemuIoFormat.TryParseStrtol(arg, out long ms) || ms < 0)
        {
            Out.Write($"{arg} is not a valid number\n");
            return -Errno.EINVAL;
        }
        Out.Flush();
        long nowNanoseconds = (DateTime.UtcNow - DateTime.UnixEpoch).Ticks * 100;
        var remaining = QemuIoFormat.SleepDuration(ms, nowNanoseconds);
        try
        {
            // Task.Delay takes at most 2^32-2 ms (49.7 days): longer sleeps are waited in parts.
            var longest = TimeSpan.FromMilliseconds(uint.MaxValue - 1);
            while (remaining > TimeSpan.Zero)
            {
                var part = remaining < longest ? remaining : longest;
                await Task.Delay(part, _cancel);
                remaining -= part;
            }
        }
        catch (OperationCanceledException)
        {
            // A signal ends the sleep; the caller closes the image and exits.
        }
        return 0;
    }

    internal int Open(string[] words)
    {
        var parsed = ParseOptions(words, "snCro:kt:d:U");
        if (parsed is null) { Usage("open"); return -Errno.EINVAL; }
        bool readOnly = false, forceShare = false, unmap = true, snapshot = false, copyOnRead = false;
        var cache = IoCacheMode.Default;
        var extra = new List<string>();
        foreach (var (opt, value) in parsed.Value.Options)
        {
            switch (opt)
            {
                case 'r': readOnly = true; break;
                case 's': snapshot = true; break;
                case 'C': copyOnRead = true; break;
                case 'U': forceShare = true; break;
                case 'o': extra.Add(value!); break;
                case 'n': cache = cache.WithNoCache(); break;
                case 't':
                    if (IoCacheMode.Parse(value!) is not { } mode)
                    {
                        Stdio.Error("Invalid cache option: " + value);
                        return -Errno.EINVAL;
                    }
                    cache = mode;
                    break;
                case 'd':
                    if (!IoCacheMode.IsDiscardMode(value!))
                    {
                        Stdio.Error("Invalid discard option: " + value);
                        return -Errno.EINVAL;
                    }
                    unmap = value is "unmap" or "on";
                    break;
            }
        }
        var operands = parsed.Value.Operands;
        if (ImageOpts && operands.Count == 1)
        {
            extra.Add(operands[0]);
            operands = [];
        }
        if (operands.Count > 1) { Usage("open"); return -Errno.EINVAL; }
        ImageSource source;
        var extraOptions = new OptionDict();
        try
        {
            var options = extraOptions;
            foreach (var o in extra)
                foreach (var (k, v) in KeyValParser.Parse(o, KeyValDialect.QemuOpts).Flatten()) options.Set(k, v);
            source = operands.Count == 1 ? ImageSource.FromFile(operands[0], options) : ImageSource.FromOptions(options);
        }
        catch (OptionException e)
        {
            Stdio.Error(operands.Count == 1 ? $"can't open device {operands[0]}: {e.Message}" : $"can't open: {e.Message}");
            return -Errno.EINVAL;
        }
        if (forceShare && ImageSource.FromOptions(extraOptions).RefusesForceShare)
        {
            // openfile: -U with "force-share=off" among the options.
            Stdio.Error("-U conflicts with image options");
            return -Errno.EINVAL;
        }
        var flags = readOnly ? OpenFlags.None : OpenFlags.ReadWrite;
        if (forceShare) flags |= OpenFlags.ForceShare;
        if (unmap) flags |= OpenFlags.Unmap;
        if (snapshot) flags |= OpenFlags.Snapshot;
        if (copyOnRead) flags |= OpenFlags.CopyOnRead;
        return OpenImage(source, flags, cache) ? 0 : -Errno.EINVAL;
    }

    internal async Task<int> CloseAsync()
    {
        await CloseImageAsync();
        return 0;
    }

    /// <summary>blk_unref: closing flushes what earlier requests left unflushed; a failure is not reported.</summary>
    private async Task CloseImageAsync()
    {
        await DrainAsync();
        DeliverAioReports();
        if (_image is null) return;
        try
        {
            if (_unflushed) await _image.FlushAsync(CancellationToken.None);
        }
        catch (IOException)
        {
        }
        await _image.DisposeAsync();
        _image = null;
        _unflushed = false;
    }

    internal int Quit()
    {
        QuitRequested = true;
        return 0;
    }

    internal int Help(string[] words)
    {
        if (words.Length == 2)
        {
            var info = IoCommandTable.Find(words[1]);
            if (info is null)
            {
                Out.Write($"command {words[1]} not found\n");
                return -Errno.EINVAL;
            }
            Out.Write(IoCommandTable.HelpLine(info, words[1]) + "\n");
            if (info.Details is not null) Out.Write("\n" + info.Details + "\n");
            return 0;
        }
        foreach (var c in IoCommandTable.Commands) Out.Write(IoCommandTable.HelpLine(c) + "\n");
        Out.Write("\nUse 'help commandname' for extended help.\n");
        return 0;
    }

    private static string ErrorText(IOException e) => NativeIOException.ErrorText(e);

    private static int ErrnoOf(IOException e) => e is NativeIOException n ? n.Errno : Errno.EIO;

    public async ValueTask DisposeAsync()
    {
        await CloseImageAsync();
    }

    /// <summary>stderr that first flushes stdout, so interleaving matches a terminal.</summary>
    private sealed class ErrorWriter : TextWriter
    {
        public override System.Text.Encoding Encoding => System.Text.Encoding.UTF8;
        public override void Write(char value) => Stdio.ErrorRaw(value.ToString());
        public override void Write(string? value)
        {
            if (value is not null) Stdio.ErrorRaw(value);
        }
    }
}
