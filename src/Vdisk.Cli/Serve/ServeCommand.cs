using System.CommandLine;
using Vdisk.Cli.Common;
using Vdisk.Native;
using Vdisk.Options;
using Vdisk.Server.Daemon;
using Vdisk.Server.Qmp;

namespace Vdisk.Cli.Serve;

/// <summary>
/// <c>vdisk serve</c>: qemu-storage-daemon's command line. Its options repeat and act in the
/// order given (a node must exist before the export that uses it, the NBD server before its
/// exports), which a declarative parser cannot express, so this verb reads its arguments by
/// hand, getopt-style, while every other verb uses System.CommandLine.
/// </summary>
internal static class ServeCommand
{
    public const string Name = "serve";

    private const string Usage = """
        Usage: vdisk serve [options]
        Holds disk images like a running VM and exports them over NBD or FUSE (qemu-storage-daemon's
        command line; options act in the order given).

          -h, --help                display this help and exit
          -V, --version             output version information and exit
          --blockdev [driver=]<driver>[,node-name=<N>][,read-only=on|off][,active=on|off]
                                    [,force-share=on|off][,cache.direct=on|off][,driver options]
                                    or a JSON object: add a node (no locks until it has users;
                                    active=off: none until activated)
          --nbd-server addr.type=unix,addr.path=<path>[,max-connections=<n>]
          --nbd-server addr.type=inet,addr.host=<host>,addr.port=<port>[,max-connections=<n>]
                                    start the NBD server (unix sockets are created mode 0600;
                                    TCP only when asked, loopback unless a host is given)
          --export [type=]nbd,id=<id>,node-name=<node>[,name=<export-name>][,writable=on|off]
                   [,description=<text>][,share-rw=on|off]
                                    export a node; on raw images an export refuses other
                                    writers like a VM's disk unless share-rw=on
          --export [type=]fuse,id=<id>,node-name=<node>,mountpoint=<file>[,writable=on|off]
                   [,growable=on|off][,allow-other=on|off|auto]
                                    mount the node's contents over an existing regular file
                                    (FUSE, through libfuse 3; locks as qemu-storage-daemon's)
          --chardev socket,id=<id>,path=<path>,server=on,wait=off
          --chardev socket,id=<id>,host=<host>,port=<port>,server=on,wait=off
                                    a listening socket for a monitor
          --monitor [chardev=]<id>[,mode=control]
                                    serve QMP on that socket
          --daemonize               run in the background once start-up succeeded (the
                                    command exits 0 then, or 1 after printing the error)
          --pidfile <path>          write the process id to <path>, locked, once start-up
                                    succeeded (removed on exit)
          --wait[=SECONDS]          vdisk's: a --blockdev whose image is locked by another
                                    process waits for it (at most SECONDS) instead of failing
          --cluster endpoints=<url>[,<url>...][,ttl=<s>][,host-id=<id>]
                                    vdisk's: etcd for file nodes with cluster-lock-id=<id>
                                    (default: VDISK_ETCD_* variables; see docs/cluster.md)

        SIGTERM, SIGINT and the QMP command 'quit' stop cleanly: requests in flight finish,
        images are flushed, locks released, sockets and pid file removed.
        """;

    /// <summary>A placeholder so that <c>vdisk --help</c> lists the verb; parsing happens in <see cref="RunAsync"/>.</summary>
    public static Command CreateForHelp() => new(Name, "hold images like a running VM: NBD exports, QMP control (qemu-storage-daemon's command line)");

    private static readonly string[] s_withArgument = ["--blockdev", "--nbd-server", "--export", "--chardev", "--monitor", "--pidfile", "--object", "-T", "--trace"];

    public static async Task<int> RunAsync(string[] args, Tool tool)
    {
        var options = new List<(string Option, string Value)>();
        Vdisk.Locking.LockWaitOptions? wait = null;
        Vdisk.Locking.Cluster.ClusterLockSettings? cluster = null;
        bool daemonize = false;
        for (int i = 0; i < args.Length; i++)
        {
            string arg = args[i];
            if (arg == "--daemonize")
            {
                daemonize = true;
                continue;
            }
            if (arg == "--wait" || arg.StartsWith("--wait=", StringComparison.Ordinal))
            {
                // vdisk's addition: every --blockdev queues behind a lock holder instead of failing.
                string? seconds = arg.Length > "--wait".Length ? arg["--wait=".Length..] : null;
                wait = LockWaitOption.FromText(seconds);
                if (wait is null) return Fail($"--wait: invalid number of seconds '{seconds}'");
                continue;
            }
            if (tool == Tool.Vdisk && (arg == "--cluster" || arg.StartsWith("--cluster=", StringComparison.Ordinal)))
            {
                // vdisk's (docs/cluster.md): the cluster-lock settings of the --blockdev file nodes, over VDISK_ETCD_*.
                string text;
                if (arg.Length > "--cluster".Length) text = arg["--cluster=".Length..];
                else if (i + 1 < args.Length) text = args[++i];
                else return Fail($"option '{arg}' requires an argument");
                try
                {
                    cluster = (cluster ?? Vdisk.Locking.Cluster.ClusterLockSettings.FromEnvironment()).WithOptions(text);
                }
                catch (Options.OptionException e)
                {
                    return Fail(e.Message);
                }
                continue;
            }
            if (arg is "-h" or "--help")
            {
                Stdio.Out.Write(Usage);
                Stdio.Out.Flush();
                return 0;
            }
            if (arg is "-V" or "--version")
            {
                Stdio.Out.Write(tool == Tool.Vdisk ? $"vdisk serve {Personality.VdiskVersion}\n" : Personality.VersionText(tool, Personality.VdiskVersion));
                Stdio.Out.Flush();
                return 0;
            }
            if (arg.StartsWith("--", StringComparison.Ordinal) && arg.Contains('='))
            {
                int eq = arg.IndexOf('=');
                string name = arg[..eq];
                if (!s_withArgument.Contains(name)) return Fail($"unrecognized option '{arg}'");
                options.Add((name, arg[(eq + 1)..]));
                continue;
            }
            if (s_withArgument.Contains(arg))
            {
                if (i + 1 >= args.Length) return Fail(arg.StartsWith("--", StringComparison.Ordinal) ? $"option '{arg}' requires an argument" : $"option requires an argument -- '{arg[1..]}'");
                options.Add((arg, args[++i]));
                continue;
            }
            if (arg.StartsWith("--", StringComparison.Ordinal)) return Fail($"unrecognized option '{arg}'");
            if (arg.StartsWith('-') && arg.Length > 1) return Fail($"invalid option -- '{arg[1]}'");
            return Fail($"{arg}: Unexpected argument");
        }

        using var start = DaemonStart.Begin(ReadyFdVariable);
        // --daemonize: the command returns once the daemon is ready or failed (os_daemonize).
        if (daemonize && !start.IsDetachedChild) return DaemonStart.RunDetached(Environment.ProcessPath!, [Name, .. args], ReadyFdVariable);

        ProcessLimits.RaiseOpenFileLimit();
        ProcessLimits.ShareOneMallocArena();
        using var signals = new Signals();
        var daemon = new StorageDaemon(cluster);
        daemon.BeginStartup();
        string? pidfile = null;
        try
        {
            foreach (var (option, value) in options)
            {
                try
                {
                    if (option == "--pidfile") pidfile = value;
                    else if (option == "--blockdev") daemon.AddBlockdev(ParseBlockdev(value), wait, signals.Token);
                    else await ApplyAsync(daemon, option, value).ConfigureAwait(false);
                }
                catch (Exception e) when (Message(e) is { } message)
                {
                    // qsd prints QEMU's hint after a lock error of --blockdev (not of --export).
                    Stdio.Error($"{option} {value}: {message}" + (e is DaemonException { Hint: { } hint } ? "\n" + hint : ""));
                    return 1;
                }
            }
            if (pidfile is not null)
            {
                try
                {
                    start.WritePidFile(pidfile);
                }
                catch (NativeIOException e)
                {
                    Stdio.Error($"cannot create PID file: {e.Message}");
                    return 1;
                }
            }
            start.Ready();
            await DaemonStart.ServeUntilAsync(daemon, daemon.QuitRequested, signals.Token).ConfigureAwait(false);
            return 0;
        }
        finally
        {
            await daemon.ShutdownAsync().ConfigureAwait(false);
        }
    }

    private static int Fail(string message)
    {
        Stdio.Error(message);
        return 1;
    }

    /// <summary>Every failure of an option is reported on one line: the option is what the user can fix.</summary>
    private static string? Message(Exception e) => e switch
    {
        QmpException q => q.Message,
        OperationCanceledException => null,
        _ => UserErrors.Message(e) ?? e.Message,
    };

    /// <summary>One option, with the same checks as its QMP twin.</summary>
    internal static async Task ApplyAsync(StorageDaemon daemon, string option, string value)
    {
        switch (option)
        {
            case "--blockdev":
                daemon.AddBlockdev(ParseBlockdev(value));
                break;
            case "--nbd-server":
                var server = (OptionDict)QapiVisitor.Keyval.Visit(QmpSchema.NbdServerOptions, KeyValParser.Parse(value), "");
                daemon.StartNbdServer(NbdServerRequest.From(server, legacyAddress: false));
                break;
            case "--export":
                var export = (OptionDict)QapiVisitor.Keyval.Visit(QmpSchema.BlockExportOptions, KeyValParser.Parse(value, impliedKey: "type"), "");
                await daemon.AddExportAsync(ExportRequest.From(export)).ConfigureAwait(false);
                break;
            case "--chardev":
                var (id, address) = ParseChardev(value);
                daemon.AddChardev(id, address);
                break;
            case "--monitor":
                daemon.AddMonitor(ParseMonitor(value));
                break;
            case "--object":
                Vdisk.Crypto.Secrets.AddFromCommandLine(value);
                break;
            default:
                throw new DaemonException($"{option} is not supported by vdisk serve");
        }
    }

    /// <summary>A --blockdev argument: JSON when it starts with '{', else keyval with implied driver.</summary>
    internal static OptionDict ParseBlockdev(string value)
    {
        if (value.StartsWith('{'))
        {
            var json = QmpJson.Parse(System.Text.Encoding.UTF8.GetBytes(value));
            if (json is not OptionDict dict) throw QmpException.Generic("Invalid parameter type for 'null', expected: object");
            return (OptionDict)QapiVisitor.Json.Visit(QmpSchema.BlockdevOptions, dict, "");
        }
        return (OptionDict)QapiVisitor.Keyval.Visit(QmpSchema.BlockdevOptions, KeyValParser.Parse(value, impliedKey: "driver"), "");
    }

    private static readonly string[] s_chardevKeys = ["backend", "id", "path", "server", "wait", "host", "port", "ipv4", "ipv6", "nodelay"];

    /// <summary>--chardev (QemuOpts syntax, as QEMU parses it): listening sockets only.</summary>
    internal static (string Id, ListenAddress Address) ParseChardev(string value)
    {
        var o = KeyValParser.Parse(value, KeyValDialect.QemuOpts, impliedKey: "backend", warn: Diagnostics.WarningSink);
        foreach (var (key, _) in o.Entries)
            if (!s_chardevKeys.Contains(key)) throw new DaemonException($"Invalid parameter '{key}'");
        string? Get(string key) => o[key] is OptionScalar s ? s.Text : null;
        string id = Get("id") ?? throw new DaemonException("chardev: no id specified");
        string backend = Get("backend") ?? "";
        if (backend != "socket") throw new DaemonException($"chardev backend '{backend}' is not supported by vdisk serve (only 'socket')");
        if (NodeOptions.ParseBool(Get("server") ?? "off") != true)
            throw new DaemonException("vdisk serve only listens: the socket chardev needs server=on");
        if (NodeOptions.ParseBool(Get("wait") ?? "on") != false)
            throw new DaemonException("vdisk serve does not wait for a monitor client: the socket chardev needs wait=off");
        string? path = Get("path"), host = Get("host"), port = Get("port");
        if (path is not null && (host is not null || port is not null))
            throw new DaemonException("chardev: give either 'path', or 'host' and 'port'");
        if (path is not null) return (id, new UnixListenAddress(path));
        if (port is null) throw new DaemonException("chardev: socket needs 'path' (unix) or 'port' (TCP)");
        return (id, new InetListenAddress(host ?? InetListenAddress.DefaultHost, port));
    }

    /// <summary>--monitor (keyval, implied key chardev): QMP only.</summary>
    internal static string ParseMonitor(string value)
    {
        var o = (OptionDict)QapiVisitor.Keyval.Visit(QmpSchema.MonitorOptions, KeyValParser.Parse(value, impliedKey: "chardev"), "");
        if (o["mode"] is OptionScalar { Text: "readline" }) throw new DaemonException("Only QMP monitors are supported by vdisk serve (mode=control)");
        if (o["pretty"] is OptionScalar { Text: "true" }) throw new DaemonException("pretty=on is not supported by vdisk serve");
        return ((OptionScalar)o["chardev"]!).Text;
    }

    /// <summary>The hidden marker of the detached child: the descriptor of the readiness pipe.</summary>
    private const string ReadyFdVariable = "VDISK_SERVE_READY_FD";
}
