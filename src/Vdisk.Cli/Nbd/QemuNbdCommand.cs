using System.Globalization;
using Vdisk.Cli.Common;
using Vdisk.Cli.Io;
using Vdisk.Native;
using Vdisk.Options;
using OptionValue = Vdisk.Cli.Common.OptionValue;
using Vdisk.Permissions;
using Vdisk.Server.Daemon;

namespace Vdisk.Cli.Nbd;

/// <summary>What a qemu-nbd command line asks for (qemu-nbd 7.2's main(), server mode only).</summary>
internal sealed record QemuNbdSettings
{
    public required string Image { get; init; }
    public string? Format { get; init; }
    public bool ImageOpts { get; init; }
    public bool ReadOnly { get; init; }
    public bool Snapshot { get; init; }
    public SnapshotChoice? LoadSnapshot { get; init; }
    public string ExportName { get; init; } = "";
    public string? Description { get; init; }
    public string? SocketPath { get; init; }
    public string Bind { get; init; } = "0.0.0.0";
    public string Port { get; init; } = "10809";
    public bool Persistent { get; init; }
    public int Shared { get; init; } = 1;
    public bool Fork { get; init; }
    public string? PidFile { get; init; }
    public IoCacheMode Cache { get; init; } = IoCacheMode.Parse("writeback")!.Value;
    public bool Unmap { get; init; }
    public string DetectZeroes { get; init; } = "off";
    public ulong Offset { get; init; }
    public bool AllocationDepth { get; init; }
    /// <summary><c>-B NAME</c>, each given: bitmaps exported as qemu:dirty-bitmap:NAME.</summary>
    public IReadOnlyList<string> Bitmaps { get; init; } = [];

    /// <summary><c>-L</c>: list the exports of the server at the address instead of serving.</summary>
    public bool List { get; init; }
}

/// <summary>
/// vdisk under the name <c>qemu-nbd</c>: serves one image over NBD with qemu-nbd 7.2's command
/// line, messages and exit codes, on the storage daemon (one image, one NBD server, one export).
/// Like qemu-nbd it holds two users of the image while it serves: the image it opened
/// (blk_new_open: consistent read, write unless <c>-r</c>, sharing everything) and the export
/// (the same, sharing everything but resize), so its lock bytes are qemu-nbd's.
/// </summary>
internal static class QemuNbdCommand
{
    private const string Usage = """
        Usage: qemu-nbd [OPTIONS] FILE
        vdisk acting as qemu-nbd: serve one disk image over NBD

          -h, --help                display this help and exit
          -V, --version             output version information and exit

        Connection properties:
          -p, --port=PORT           port to listen on (default `10809')
          -b, --bind=IFACE          interface to bind to (default `0.0.0.0')
          -k, --socket=PATH         path to the unix socket
          -e, --shared=NUM          device can be shared by NUM clients (default '1')
          -L, --list                list exports available from another NBD server
          -t, --persistent          don't exit on the last connection
          -v, --verbose             display extra debugging information
          -x, --export-name=NAME    expose export by name (default is empty string)
          -D, --description=TEXT    export a human-readable description

        Exposing part of the image:
          -o, --offset=OFFSET       offset into the image
          -A, --allocation-depth    expose the allocation depth
          -B, --bitmap=NAME         expose a persistent dirty bitmap

        General purpose options:
          --fork                    fork off the server process and exit the parent
                                    once the server is running
          --pid-file=PATH           store the server's process ID in the given file

        Block device options:
          -f, --format=FORMAT       set image format (raw, qcow2)
          -r, --read-only           export read-only
          -s, --snapshot            use FILE as an external snapshot, create a temporary
                                    file with backing_file=FILE, redirect the write to
                                    the temporary one
          -l, --load-snapshot=SNAPSHOT_PARAM
                                    load an internal snapshot inside FILE and export it
                                    as an read-only device, SNAPSHOT_PARAM format is
                                    'snapshot.id=[ID],snapshot.name=[NAME]', or
                                    '[ID_OR_NAME]'
          -n, --nocache             disable host cache
              --cache=MODE          set cache mode used to access the disk image, the
                                    valid options are: 'none', 'writeback' (default),
                                    'writethrough', 'directsync' and 'unsafe'
              --aio=MODE            set AIO mode (native, io_uring or threads)
              --discard=MODE        set discard mode (ignore, unmap)
              --detect-zeroes=MODE  set detect-zeroes mode (off, on, unmap)
              --image-opts          treat FILE as a full set of image options

        Not supported by vdisk: -c/--connect, -d/--disconnect,
        --tls-*, --selinux-label, -T/--trace.

        """;

    private enum Opt
    {
        Help, Version, Bind, Port, Socket, Offset, ReadOnly, AllocationDepth, Bitmap, Connect, Disconnect,
        List, Snapshot, LoadSnapshot, NoCache, Cache, Aio, Discard, DetectZeroes, Shared, Format, Persistent,
        Verbose, Object, ExportName, Description, TlsCreds, TlsHostname, TlsAuthz, ImageOpts, Trace, Fork,
        PidFile, SelinuxLabel,
    }

    private static GetOptOption O(char? c, string name, OptionValue value, Opt tag) => new(c, [name], value, tag);

    /// <summary>qemu-nbd 7.2's options: <c>"hVb:o:p:rsnc:dvk:e:f:tl:x:T:D:AB:L"</c> and its long names.</summary>
    private static readonly GetOpt s_getOpt = new([
        O('h', "help", OptionValue.None, Opt.Help),
        O('V', "version", OptionValue.None, Opt.Version),
        O('b', "bind", OptionValue.Required, Opt.Bind),
        O('p', "port", OptionValue.Required, Opt.Port),
        O('k', "socket", OptionValue.Required, Opt.Socket),
        O('o', "offset", OptionValue.Required, Opt.Offset),
        O('r', "read-only", OptionValue.None, Opt.ReadOnly),
        O('A', "allocation-depth", OptionValue.None, Opt.AllocationDepth),
        O('B', "bitmap", OptionValue.Required, Opt.Bitmap),
        O('c', "connect", OptionValue.Required, Opt.Connect),
        O('d', "disconnect", OptionValue.None, Opt.Disconnect),
        O('L', "list", OptionValue.None, Opt.List),
        O('s', "snapshot", OptionValue.None, Opt.Snapshot),
        O('l', "load-snapshot", OptionValue.Required, Opt.LoadSnapshot),
        O('n', "nocache", OptionValue.None, Opt.NoCache),
        O(null, "cache", OptionValue.Required, Opt.Cache),
        O(null, "aio", OptionValue.Required, Opt.Aio),
        O(null, "discard", OptionValue.Required, Opt.Discard),
        O(null, "detect-zeroes", OptionValue.Required, Opt.DetectZeroes),
        O('e', "shared", OptionValue.Required, Opt.Shared),
        O('f', "format", OptionValue.Required, Opt.Format),
        O('t', "persistent", OptionValue.None, Opt.Persistent),
        O('v', "verbose", OptionValue.None, Opt.Verbose),
        O(null, "object", OptionValue.Required, Opt.Object),
        O('x', "export-name", OptionValue.Required, Opt.ExportName),
        O('D', "description", OptionValue.Required, Opt.Description),
        O(null, "tls-creds", OptionValue.Required, Opt.TlsCreds),
        O(null, "tls-hostname", OptionValue.Required, Opt.TlsHostname),
        O(null, "tls-authz", OptionValue.Required, Opt.TlsAuthz),
        O(null, "image-opts", OptionValue.None, Opt.ImageOpts),
        O('T', "trace", OptionValue.Required, Opt.Trace),
        O(null, "fork", OptionValue.None, Opt.Fork),
        O(null, "pid-file", OptionValue.Required, Opt.PidFile),
        O(null, "selinux-label", OptionValue.Required, Opt.SelinuxLabel),
    ]);

    /// <summary>The outcome of reading the command line: settings to serve, or an exit code (the messages already printed).</summary>
    private readonly record struct Parsed(QemuNbdSettings? Settings, int ExitCode);

    /// <summary>
    /// Reads the command line as qemu-nbd's main() does, in its order: each option is checked as
    /// it comes (so <c>--detect-zeroes=unmap</c> must follow <c>--discard=unmap</c>), then the
    /// operand count. <paramref name="argv0"/> is the program as started: getopt and the
    /// "Try ... --help" hint name it that way.
    /// </summary>
    private static Parsed Parse(string[] args, string argv0)
    {
        var result = s_getOpt.Parse(args);
        var s = new QemuNbdSettings { Image = "" };
        bool seenCache = false, seenAio = false, seenDiscard = false, list = false;
        bool seenDevice = false, seenFormat = false, seenBitmap = false;
        string? exportName = null;
        var unsupported = new List<string>();
        foreach (var (option, value) in result.Options)
        {
            string v = value ?? "";
            switch ((Opt)option.Tag!)
            {
                case Opt.Snapshot: s = s with { Snapshot = true }; break;
                case Opt.NoCache or Opt.Cache:
                    if (seenCache) return Fail("-n and --cache can only be specified once");
                    seenCache = true;
                    string mode = (Opt)option.Tag! == Opt.NoCache ? "none" : v;
                    if (IoCacheMode.Parse(mode) is not { } cache) return Fail($"Invalid cache mode `{mode}'");
                    s = s with { Cache = cache };
                    break;
                case Opt.Aio:
                    if (seenAio) return Fail("--aio can only be specified once");
                    seenAio = true;
                    if (v is not ("threads" or "native" or "io_uring")) return Fail($"Invalid aio mode '{v}'");
                    break;
                case Opt.Discard:
                    if (seenDiscard) return Fail("--discard can only be specified once");
                    seenDiscard = true;
                    if (!IoCacheMode.IsDiscardMode(v)) return Fail($"Invalid discard mode `{v}'");
                    s = s with { Unmap = v is "on" or "unmap" };
                    break;
                case Opt.DetectZeroes:
                    if (v is not ("off" or "on" or "unmap")) return Fail($"Failed to parse detect_zeroes mode: invalid parameter value: {v}");
                    if (v == "unmap" && !s.Unmap) return Fail("setting detect-zeroes to unmap is not allowed without setting discard operation to unmap");
                    s = s with { DetectZeroes = v };
                    break;
                case Opt.Bind: s = s with { Bind = v }; break;
                case Opt.Port: s = s with { Port = v }; break;
                case Opt.Offset:
                    if (ParseCInteger(v) is not { } offset || offset < 0) return Fail($"Invalid offset '{v}'");
                    s = s with { Offset = (ulong)offset };
                    break;
                case Opt.ReadOnly: s = s with { ReadOnly = true }; break;
                case Opt.Socket:
                    if (!v.StartsWith('/')) return Fail("socket path must be absolute");
                    s = s with { SocketPath = v };
                    break;
                case Opt.Shared:
                    if (ParseCInteger(v) is not { } shared || shared < 0 || shared > int.MaxValue) return Fail($"Invalid shared device number '{v}'");
                    s = s with { Shared = (int)shared };
                    break;
                case Opt.Format: s = s with { Format = v }; seenFormat = true; break;
                case Opt.Persistent: s = s with { Persistent = true }; break;
                case Opt.ExportName:
                    if (System.Text.Encoding.UTF8.GetByteCount(v) > NbdMaxString) return Fail($"export name '{v}' too long");
                    exportName = v;
                    break;
                case Opt.Description:
                    if (System.Text.Encoding.UTF8.GetByteCount(v) > NbdMaxString) return Fail($"export description '{v}' too long");
                    s = s with { Description = v };
                    break;
                case Opt.Verbose: break;
                case Opt.Version:
                    Stdio.Out.Write(Personality.VersionText(Tool.QemuNbd, Personality.VdiskVersion));
                    Stdio.Out.Flush();
                    return new(null, 0);
                case Opt.Help:
                    Stdio.Out.Write(Usage);
                    Stdio.Out.Flush();
                    return new(null, 0);
                case Opt.ImageOpts: s = s with { ImageOpts = true }; break;
                case Opt.Fork: s = s with { Fork = true }; break;
                case Opt.PidFile: s = s with { PidFile = v }; break;
                case Opt.Connect or Opt.Disconnect:
                    seenDevice = true;
                    unsupported.Add("-c/--connect and -d/--disconnect (the kernel NBD client) are not supported by vdisk; connect a client to its socket instead (nbd-client, or qemu-nbd -c of QEMU)");
                    break;
                case Opt.List: list = true; break;
                case Opt.LoadSnapshot:
                    // qemu-nbd: the snapshot is parsed at once, and -l implies -r.
                    if (!SnapshotChoice.TryParse(v, out var snapshot, nbdQuotes: true)) return new(null, 1);
                    s = s with { LoadSnapshot = snapshot, ReadOnly = true };
                    break;
                case Opt.Bitmap: seenBitmap = true; s = s with { Bitmaps = [v, .. s.Bitmaps] }; break; // QAPI_LIST_PREPEND, as qemu-nbd
                case Opt.AllocationDepth: s = s with { AllocationDepth = true }; break;
                case Opt.Object:
                    // qemu-nbd defines each object as it reads the option.
                    try
                    {
                        Vdisk.Crypto.Secrets.AddFromCommandLine(v!);
                    }
                    catch (Vdisk.Options.OptionException e)
                    {
                        return Fail(e.Message);
                    }
                    break;
                case Opt.TlsCreds or Opt.TlsHostname or Opt.TlsAuthz: unsupported.Add("TLS (--tls-creds, --tls-hostname, --tls-authz) is not supported by vdisk"); break;
                case Opt.SelinuxLabel: unsupported.Add("--selinux-label is not supported by vdisk"); break;
                case Opt.Trace: unsupported.Add("-T/--trace is not supported by vdisk"); break;
            }
        }
        if (result.Error is { } error)
        {
            // glibc's getopt names the program as started; qemu-nbd's hint follows with its own prefix.
            Console.Error.Write($"{argv0}: {error.GlibcMessage}\n");
            Stdio.Error($"Try `{argv0} --help' for more information.");
            return new(null, 1);
        }
        if (list)
        {
            if (result.Operands.Count != 0) return Fail("List mode is incompatible with a file name");
            if (exportName is not null || s.Description is not null || s.Offset != 0 || seenDevice || seenFormat || s.LoadSnapshot is not null ||
                seenBitmap || s.AllocationDepth || seenAio || seenDiscard || seenCache)
                return Fail("List mode is incompatible with per-device settings");
            if (s.Fork) return Fail("List mode is incompatible with forking");
            if (unsupported.Count > 0) return Fail(unsupported[0]);
            return new(s with { List = true }, 0);
        }
        if (result.Operands.Count != 1)
        {
            Stdio.Error("Invalid number of arguments");
            Console.Error.Write($"Try `{argv0} --help' for more information.\n");
            return new(null, 1);
        }
        if (unsupported.Count > 0) return Fail(unsupported[0]);
        if (s.Cache.WriteThrough) return Fail("write-through cache modes (writethrough, directsync) are not supported by vdisk's qemu-nbd yet");
        if (s.Offset != 0) return Fail("-o/--offset is not supported by vdisk's qemu-nbd yet");
        return new(s with { Image = result.Operands[0], ExportName = exportName ?? "" }, 0);
    }

    /// <summary>NBD_MAX_STRING_SIZE.</summary>
    private const int NbdMaxString = 4096;

    private static Parsed Fail(string message)
    {
        Stdio.Error(message);
        return new(null, 1);
    }

    /// <summary>qemu_strtoi/qemu_strtou64 with base 0: decimal, 0x hexadecimal or 0 octal, an optional sign; null if malformed.</summary>
    private static long? ParseCInteger(string text)
    {
        string t = text.Trim();
        bool negative = t.StartsWith('-');
        if (negative || t.StartsWith('+')) t = t[1..];
        long value;
        bool ok = t.StartsWith("0x", StringComparison.OrdinalIgnoreCase) ? long.TryParse(t[2..], NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out value)
            : t.Length > 1 && t[0] == '0' ? TryParseOctal(t[1..], out value)
            : long.TryParse(t, NumberStyles.None, CultureInfo.InvariantCulture, out value);
        if (!ok || t.Length == 0) return null;
        return negative ? -value : value;
    }

    private static bool TryParseOctal(string digits, out long value)
    {
        value = 0;
        foreach (char c in digits)
        {
            if (c is < '0' or > '7' || value > long.MaxValue / 8) return false;
            value = value * 8 + (c - '0');
        }
        return true;
    }

    /// <summary>Runs vdisk as qemu-nbd.</summary>
    public static async Task<int> RunAsync(string[] args)
    {
        string argv0 = Personality.ProgramPath() ?? "qemu-nbd";
        var (settings, exitCode) = Parse(args, argv0);
        if (settings is null) return exitCode;
        if (settings.List) return await ListAsync(settings).ConfigureAwait(false);

        using var start = DaemonStart.Begin(ReadyFdVariable);
        // --fork: the child must run under the name qemu-nbd, through the link this process was started by.
        if (settings.Fork && !start.IsDetachedChild)
            return DaemonStart.RunDetached(argv0.Contains('/') ? Path.GetFullPath(argv0) : argv0, args, ReadyFdVariable);

        ProcessLimits.RaiseOpenFileLimit();
        using var signals = new Signals();
        var daemon = new StorageDaemon();
        daemon.BeginStartup();
        DiskImage? image = null;
        var lastClientGone = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        try
        {
            ListenAddress address = settings.SocketPath is { } path ? new UnixListenAddress(path) : new InetListenAddress(settings.Bind, settings.Port);
            try
            {
                // nbd_server_is_qemu_nbd(shared): the server accepts at most 'shared' clients at once.
                daemon.StartNbdServer(new NbdServerRequest(address, (uint)settings.Shared));
            }
            catch (DaemonException e)
            {
                Stdio.Error(e.Message);
                return 1;
            }
            var server = daemon.NbdServer!;
            server.ConnectionClosed += connection =>
            {
                // nbd_client_closed: the last negotiated client gone ends a non-persistent server.
                if (connection.Negotiated && server.ConnectionCount == 0 && !settings.Persistent) lastClientGone.TrySetResult();
            };

            var flags = settings.ReadOnly ? OpenFlags.None : OpenFlags.ReadWrite;
            if (settings.Unmap) flags |= OpenFlags.Unmap;
            if (settings.Snapshot) flags |= OpenFlags.Snapshot;
            if (settings.Cache.NoFlush) flags |= OpenFlags.NoFlush;
            if (settings.Cache.Direct) Stdio.Error("warning: O_DIRECT (-n, --cache=none) is not supported yet; using the host page cache");
            try
            {
                var source = Source(settings);
                // blk_new_open: qemu-nbd's own user of the image, held while it serves.
                image = DiskImage.Open(source, flags, name: null, graph: daemon.Graph);
                if (settings.LoadSnapshot is { } snapshot && !await snapshot.LoadAsync([image], CancellationToken.None).ConfigureAwait(false)) return 1;
                bool writable = !settings.ReadOnly;
                await daemon.AddExportAsync(new ExportRequest(ExportId, image.Root.NodeName, settings.ExportName, settings.Description, writable, ShareRw: false, settings.AllocationDepth, settings.Bitmaps),
                    BackendPermissions.StorageDaemonExport(writable)).ConfigureAwait(false);
            }
            catch (DaemonException e)
            {
                Stdio.Error(e.Message);
                return 1;
            }
            catch (Exception e) when (Stdio.Describe(e) is { } text)
            {
                Stdio.Error($"Failed to blk_new_open '{settings.Image}': {text}");
                return 1;
            }

            if (settings.PidFile is { } pidFile)
            {
                try
                {
                    start.WritePidFile(pidFile);
                }
                catch (NativeIOException e)
                {
                    Stdio.Error(e.Message);
                    return 1;
                }
            }
            // Free any busy file system, as qemu-nbd does once it is set up.
            Directory.SetCurrentDirectory("/");
            start.Ready();
            await DaemonStart.ServeUntilAsync(daemon, lastClientGone.Task, signals.Token).ConfigureAwait(false);
            return 0;
        }
        finally
        {
            // blk_exp_close_all, then blk_unref: the export goes first, then qemu-nbd's own user.
            await daemon.ShutdownAsync().ConfigureAwait(false);
            if (image is not null) await image.DisposeAsync().ConfigureAwait(false);
        }
    }

    /// <summary>qemu_nbd_client_list: the exports of the server at <c>-k</c> (or <c>-b</c>/<c>-p</c>), printed as qemu-nbd prints them.</summary>
    private static async Task<int> ListAsync(QemuNbdSettings settings)
    {
        IReadOnlyList<NbdListedExport> exports;
        try
        {
            exports = await NbdExportList.ListAsync(settings.SocketPath, settings.Bind, settings.Port, CancellationToken.None).ConfigureAwait(false);
        }
        catch (IOException e)
        {
            Stdio.Error(e.Message);
            return 1;
        }
        Stdio.Out.Write(QemuNbdListing.Format(exports));
        Stdio.Out.Flush();
        return 0;
    }

    /// <summary>qemu-nbd's export id.</summary>
    private const string ExportId = "qemu-nbd-export";

    /// <summary>FILE as a filename (with <c>-f</c>) or, with <c>--image-opts</c>, an option string; <c>--detect-zeroes</c> applies to the top node.</summary>
    private static ImageSource Source(QemuNbdSettings s)
    {
        if (s.ImageOpts)
        {
            if (s.Format is not null) throw new DaemonException("--image-opts and -f are mutually exclusive");
            var options = KeyValParser.Parse(s.Image, KeyValDialect.QemuOpts, warn: Diagnostics.WarningSink);
            if (s.DetectZeroes != "off") options.Set("detect-zeroes", s.DetectZeroes);
            return ImageSource.FromOptions(options);
        }
        var extra = new OptionDict();
        if (s.Format is not null) extra.Set("driver", s.Format);
        if (s.DetectZeroes != "off") extra.Set("detect-zeroes", s.DetectZeroes);
        return ImageSource.FromFile(s.Image, extra);
    }

    /// <summary>The hidden marker of the forked server: the descriptor of the readiness pipe.</summary>
    private const string ReadyFdVariable = "VDISK_QEMU_NBD_READY_FD";
}
