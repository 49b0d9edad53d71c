using Vdisk.Native;

namespace Vdisk.Locking.Cluster;

/// <summary>
/// Cluster-wide image locks for this process: the process's one session (lease), and the event
/// that reports a fence. The settings come with each open (<see cref="Graph.BlockGraph.ClusterLocks"/>,
/// else the environment). Nothing here runs, and no connection is made, until a node with
/// <c>cluster-lock-id</c> is opened.
/// </summary>
/// <example>
/// <code>
/// var cluster = ClusterLockSettings.FromEnvironment() with { Endpoints = [new Uri("http://10.0.0.5:2379")] };
/// await using var disk = DiskImage.Open(ImageSource.FromImageOptions(
///     "driver=raw,file.driver=file,file.filename=/mnt/shared/vm42.img,file.cluster-lock-id=vm42"), AccessProfiles.QemuIoReadWrite,
///     graph: new BlockGraph { ClusterLocks = cluster });
/// </code>
/// </example>
public static class ClusterLocks
{
    private static readonly object s_gate = new();
    private static ClusterSession? s_session;
    private static bool s_exitHooked;

    /// <summary>The command holder records name (e.g. <c>vdisk serve</c>); the CLI sets it, the default is the program and its first word.</summary>
    public static string Command { get; set; } = DefaultCommand();

    /// <summary>The process's session, or null before the first cluster lock (or after the last one fenced).</summary>
    public static ClusterSession? Session
    {
        get
        {
            lock (s_gate) return s_session is { IsFenced: false } s ? s : null;
        }
    }

    /// <summary>
    /// Raised once per session when it fences itself. A daemon inactivates the nodes whose
    /// holders are on it; a one-shot tool just stops writing. Handlers must not block.
    /// </summary>
    public static event Action<ClusterSession>? SessionFenced;

    /// <summary>
    /// The cluster part of a file node: validates the id and <paramref name="settings"/> (null:
    /// the environment's, read now), and starts the
    /// process's session if there is none (granting the lease: when etcd does not answer, this
    /// fails before anything is written).
    /// </summary>
    /// <exception cref="Options.OptionException">Bad id, bad settings, or no endpoints.</exception>
    /// <exception cref="ClusterUnavailableException">etcd does not answer.</exception>
    public static ClusterLockHolder CreateHolder(ClusterLockSettings? settings, string lockId, string path, string nodeName, FileIdentity identity, bool isBlockDevice)
    {
        ClusterLockSettings.ValidateLockId(lockId);
        settings ??= ClusterLockSettings.FromEnvironment();
        settings.RequireEndpoints(lockId);
        string fileId = $"{identity.DevMajor:x}:{identity.DevMinor:x}:{identity.Inode}";
        return new ClusterLockHolder(() => ProcessSession(settings), lockId, System.IO.Path.GetFullPath(path), nodeName, fileId,
            isBlockDevice ? DeviceIdentity(path) : null);
    }

    /// <summary>The live session for <paramref name="settings"/>, started when needed.</summary>
    internal static ClusterSession ProcessSession(ClusterLockSettings settings)
    {
        lock (s_gate)
        {
            if (s_session is { IsFenced: false } live && live.Settings.Equals(settings)) return live;
            var store = new EtcdStore(settings);
            ClusterSession session;
            try
            {
                session = ClusterSession.Start(settings, store);
            }
            catch
            {
                store.Dispose();
                throw;
            }
            session.Fenced += s =>
            {
                Diagnostics.Warn(s.FencedMessage);
                SessionFenced?.Invoke(s);
            };
            s_session = session;
            if (!s_exitHooked)
            {
                s_exitHooked = true;
                // Keys were deleted as images closed; revoking the lease at exit leaves nothing behind.
                AppDomain.CurrentDomain.ProcessExit += (_, _) => EndSession();
            }
            return session;
        }
    }

    /// <summary>Ends the process's session (revokes its lease); the next cluster lock starts a new one.</summary>
    public static void EndSession()
    {
        ClusterSession? session;
        lock (s_gate)
        {
            session = s_session;
            s_session = null;
        }
        session?.Dispose();
    }

    /// <summary>
    /// A host-independent identity of a block device: its WWID (SCSI, NVMe), device-mapper UUID
    /// or serial from sysfs, or null when the kernel shows none.
    /// </summary>
    public static string? DeviceIdentity(string path)
    {
        try
        {
            string name = System.IO.Path.GetFileName(new FileInfo(path).ResolveLinkTarget(returnFinalTarget: true)?.FullName ?? System.IO.Path.GetFullPath(path));
            foreach (var (file, kind) in new[] { ("device/wwid", "wwid"), ("wwid", "wwid"), ("dm/uuid", "dm-uuid"), ("device/serial", "serial") })
            {
                string sysfs = $"/sys/class/block/{name}/{file}";
                if (!System.IO.File.Exists(sysfs)) continue;
                string value = System.IO.File.ReadAllText(sysfs).Trim();
                if (value.Length > 0) return kind + ":" + value;
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
        return null;
    }

    private static string DefaultCommand()
    {
        var args = Environment.GetCommandLineArgs();
        string program = args.Length > 0 ? System.IO.Path.GetFileName(args[0]) : "vdisk";
        if (program.EndsWith(".dll", StringComparison.Ordinal)) program = program[..^4];
        return args.Length > 1 && !args[1].StartsWith('-') && args[1].Length <= 32 ? program + " " + args[1] : program;
    }
}
