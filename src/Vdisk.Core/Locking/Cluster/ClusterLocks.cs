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
        string? deviceId = isBlockDevice ? DeviceIdentity(path) : null;
        if (lockId == AutoLockId) lockId = AutoLockIdFor(path, isBlockDevice, deviceId);
        settings ??= ClusterLockSettings.FromEnvironment();
        settings.RequireEndpoints(lockId);
        string fileId = $"{identity.DevMajor:x}:{identity.DevMinor:x}:{identity.Inode}";
        return new ClusterLockHolder(() => ProcessSession(settings), lockId, System.IO.Path.GetFullPath(path), nodeName, fileId, deviceId);
    }

    /// <summary><c>cluster-lock-id=auto</c>: the id is the block device's own identity, the same on every host that sees the LUN.</summary>
    public const string AutoLockId = "auto";

    /// <summary>
    /// The id <c>cluster-lock-id=auto</c> stands for: <paramref name="deviceId"/> (see
    /// <see cref="DeviceIdentity(string)"/>) as a valid id. Regular files have no such identity
    /// (inode numbers mean nothing across hosts), so they need an id of their own.
    /// </summary>
    /// <exception cref="Options.OptionException">Not a block device, or one the kernel shows no identity for.</exception>
    public static string AutoLockIdFor(string path, bool isBlockDevice, string? deviceId)
    {
        if (!isBlockDevice)
            throw new Options.OptionException($"cluster-lock-id=auto needs a block device with a WWID, dm UUID or serial; '{path}' is not a block device: give the image an id of its own");
        if (deviceId is null)
            throw new Options.OptionException($"cluster-lock-id=auto: the kernel shows no WWID, dm UUID or serial for '{path}': give the image an id of its own");
        return LockIdFromDeviceIdentity(deviceId);
    }

    /// <summary>
    /// A device identity (<c>wwid:naa.6001405...</c>, <c>serial:QM00001</c>) as a lock id: bytes
    /// outside the id's alphabet (WWIDs of the t10 kind have runs of spaces) and <c>+</c> itself
    /// become <c>+XX</c> (hex), so that two identities never share an id; an identity too long
    /// for an id becomes its kind and SHA-256.
    /// </summary>
    public static string LockIdFromDeviceIdentity(string deviceId)
    {
        var id = new System.Text.StringBuilder(deviceId.Length);
        foreach (byte b in System.Text.Encoding.UTF8.GetBytes(deviceId))
        {
            char c = (char)b;
            if (b < 0x80 && (char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.' or ':' or '@')) id.Append(c);
            else id.Append('+').Append(b.ToString("x2", System.Globalization.CultureInfo.InvariantCulture));
        }
        if (id.Length <= ClusterLockSettings.MaxLockIdLength) return id.ToString();
        int colon = deviceId.IndexOf(':', StringComparison.Ordinal);
        string kind = colon > 0 ? deviceId[..colon] : "device";
        return kind + ":sha256-" + Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(deviceId)));
    }

    /// <summary>The live session for <paramref name="settings"/>, started when needed.</summary>
    internal static ClusterSession ProcessSession(ClusterLockSettings settings)
    {
        lock (s_gate)
        {
            if (s_session is { IsFenced: false } live && live.Settings.Equals(settings)) return live;
            var store = new Agent.AgentClusterStore(settings);
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
    /// or serial (SCSI/ATA under device/, virtio-blk on the disk itself) from sysfs, or null
    /// when the kernel shows none.
    /// </summary>
    public static string? DeviceIdentity(string path) => DeviceIdentity(path, "/sys");

    /// <summary><see cref="DeviceIdentity(string)"/> read from a sysfs tree at <paramref name="sysfsRoot"/> (tests give a made one).</summary>
    internal static string? DeviceIdentity(string path, string sysfsRoot)
    {
        try
        {
            string name = System.IO.Path.GetFileName(new FileInfo(path).ResolveLinkTarget(returnFinalTarget: true)?.FullName ?? System.IO.Path.GetFullPath(path));
            foreach (var (file, kind) in new[] { ("device/wwid", "wwid"), ("wwid", "wwid"), ("dm/uuid", "dm-uuid"), ("device/serial", "serial"), ("serial", "serial") })
            {
                string sysfs = $"{sysfsRoot}/class/block/{name}/{file}";
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
