using System.Globalization;
using System.Text;
using Vdisk.Locking;
using Vdisk.Native;
using Vdisk.Permissions;

namespace Vdisk.Inspection;

/// <summary>The locks on one image file and who holds them.</summary>
public sealed class ImageLocks
{
    /// <summary>Creates the report of an image whose locks were read.</summary>
    public ImageLocks(string path, FileIdentity file, IReadOnlyList<LockHolder> holders, int uninspectableProcesses = 0)
    {
        Path = path;
        File = file;
        Holders = holders;
        UninspectableProcesses = uninspectableProcesses;
    }

    private ImageLocks(string path, string error, int errno)
    {
        Path = path;
        Error = error;
        Errno = errno;
        Holders = [];
    }

    /// <summary>The report of a path that could not be examined.</summary>
    public static ImageLocks Failed(string path, string error, int errno) => new(path, error, errno);

    /// <summary>The path as given.</summary>
    public string Path { get; }

    /// <summary>Device and inode (locks belong to the inode, not the path), or null when <see cref="Error"/> is set.</summary>
    public FileIdentity? File { get; }

    /// <summary>Why the path could not be examined (strerror text), or null.</summary>
    public string? Error { get; }

    /// <summary>errno behind <see cref="Error"/>, or 0.</summary>
    public int Errno { get; }

    /// <summary>Every holder of a lock on the file: attributed ones first, unknown ones last.</summary>
    public IReadOnlyList<LockHolder> Holders { get; }

    /// <summary>Processes whose descriptors could not be read (so some holders may be unknown).</summary>
    public int UninspectableProcesses { get; }

    /// <summary>Would an open with <paramref name="request"/> on the image file get its locks now?</summary>
    public LockVerdict Verdict(PermissionPair request) => LockVerdict.Evaluate(Holders, request);

    /// <summary>Would an open in <paramref name="mode"/> of a <paramref name="format"/> image get its locks now?</summary>
    public LockVerdict Verdict(AccessMode mode, string format = "raw") => Verdict(AccessModes.FileRequest(mode, format));
}

/// <summary>
/// Answers "who holds this image, and who blocks me" from /proc: reads /proc/locks once, maps
/// each lock to its inode, and walks /proc/*/fd only when an examined file has locks, reading
/// fdinfo only for descriptors of such files. OFD locks (PID -1 in /proc/locks and lslocks) are
/// attributed to the process and descriptor through their fdinfo <c>lock:</c> lines. Holders
/// whose processes cannot be read (another user's) are reported as unknown, not dropped.
/// </summary>
/// <example>
/// <code>
/// var image = new LockInspector().Inspect("disk.qcow2");
/// var verdict = image.Verdict(AccessMode.Write, "qcow2");
/// if (!verdict.Admitted) Console.WriteLine($"{verdict.Error}: {verdict.Reason}");
/// </code>
/// </example>
public sealed class LockInspector
{
    /// <summary>
    /// How many times a snapshot is taken when it shows locks no visible descriptor holds. The
    /// kernel has no atomic view of /proc/locks and every fdinfo: a lock released between the two
    /// reads (a process closing the image or exiting, whose descriptors may also be unreadable
    /// for that moment) is seen without an owner, and a snapshot taken again a moment later no
    /// longer shows it. A lock still ownerless after these many reads is reported as unknown
    /// (another user's process, when this one is not root).
    /// </summary>
    internal const int SnapshotAttempts = 3;

    /// <summary>The pause before snapshot N+1 is N times this: long enough for an exiting process to be gone.</summary>
    private static readonly TimeSpan s_snapshotPause = TimeSpan.FromMilliseconds(5);

    private readonly string _proc;
    private readonly Action<int>? _beforeSnapshot;

    /// <summary>Creates an inspector over <paramref name="procRoot"/> (a different root serves tests).</summary>
    public LockInspector(string procRoot = "/proc") => _proc = procRoot;

    /// <summary>Test seam: <paramref name="beforeSnapshot"/> runs before each snapshot with its number (1, 2, ...).</summary>
    internal LockInspector(string procRoot, Action<int> beforeSnapshot) : this(procRoot) => _beforeSnapshot = beforeSnapshot;

    /// <summary>Examines one file.</summary>
    /// <exception cref="IOException">/proc/locks could not be read.</exception>
    public ImageLocks Inspect(string path) => Inspect([path])[0];

    /// <summary>Examines many files with one pass over /proc (in the order given).</summary>
    /// <exception cref="IOException">/proc/locks could not be read.</exception>
    public IReadOnlyList<ImageLocks> Inspect(IEnumerable<string> paths)
    {
        var list = paths as IReadOnlyList<string> ?? paths.ToList();
        for (int attempt = 1; ; attempt++)
        {
            _beforeSnapshot?.Invoke(attempt);
            var result = Snapshot(list, out bool ownerless);
            if (!ownerless || attempt == SnapshotAttempts) return result;
            Thread.Sleep(s_snapshotPause * attempt);
        }
    }

    /// <summary>
    /// One read of /proc/locks and the descriptors of the locked files.
    /// <paramref name="ownerless"/> tells that some lock had no visible holder: perhaps a lock
    /// released while scanning, worth another snapshot.
    /// </summary>
    private IReadOnlyList<ImageLocks> Snapshot(IReadOnlyList<string> paths, out bool ownerless)
    {
        var byInode = ReadLocks();
        var identities = new List<(string Path, FileIdentity? Id, NativeIOException? Error)>();
        var wanted = new HashSet<FileIdentity>();
        foreach (var path in paths)
        {
            try
            {
                var id = FileIdentity.OfPath(path);
                identities.Add((path, id, null));
                if (byInode.ContainsKey(id)) wanted.Add(id);
            }
            catch (NativeIOException e)
            {
                identities.Add((path, null, e));
            }
        }

        var scan = wanted.Count > 0 ? ScanDescriptors(wanted) : DescriptorScan.Empty;
        string unknownReason = scan.Uninspectable > 0
            ? $"its owner is not visible: the descriptors of {scan.Uninspectable} process(es) could not be read (another user's processes need root)"
            : "no visible descriptor holds it (taken or released while scanning)";
        var holdersByInode = new Dictionary<FileIdentity, IReadOnlyList<LockHolder>>();
        var result = new List<ImageLocks>(identities.Count);
        foreach (var (path, id, error) in identities)
        {
            if (id is not { } file)
            {
                result.Add(ImageLocks.Failed(path, error!.Message, error.Errno));
                continue;
            }
            if (!holdersByInode.TryGetValue(file, out var holders))
            {
                holders = byInode.TryGetValue(file, out var locks)
                    ? LockAttribution.Attribute(locks, scan.Descriptors.GetValueOrDefault(file) ?? [], scan.Process, unknownReason)
                    : [];
                holdersByInode[file] = holders;
            }
            result.Add(new ImageLocks(path, file, holders, holders.Count > 0 ? scan.Uninspectable : 0));
        }
        ownerless = holdersByInode.Values.Any(hs => hs.Any(h => h.Kind == LockHolderKind.Unknown));
        return result;
    }

    /// <summary>The holders of <paramref name="path"/> whose locks cover <paramref name="offset"/> (what a failed test tripped over).</summary>
    public IReadOnlyList<LockHolder> HoldersOf(string path, long offset) =>
        Inspect(path).Holders.Where(h => h.Blocks(offset)).OrderBy(h => h.Kind == LockHolderKind.Unknown).ToList();

    private Dictionary<FileIdentity, List<KernelLock>> ReadLocks()
    {
        var map = new Dictionary<FileIdentity, List<KernelLock>>();
        foreach (var l in KernelLock.ReadProcLocks(System.IO.Path.Combine(_proc, "locks")))
        {
            if (!map.TryGetValue(l.File, out var list)) map[l.File] = list = new List<KernelLock>();
            list.Add(l);
        }
        return map;
    }

    private sealed class DescriptorScan(Func<int, ProcessDescription> process)
    {
        public static DescriptorScan Empty => new(pid => new ProcessDescription(pid, null, null));
        public Dictionary<FileIdentity, List<DescriptorLocks>> Descriptors { get; } = new();
        public int Uninspectable { get; set; }
        public Func<int, ProcessDescription> Process => process;
    }

    /// <summary>Finds the descriptors of <paramref name="wanted"/> inodes in every visible process and reads their fdinfo.</summary>
    private DescriptorScan ScanDescriptors(HashSet<FileIdentity> wanted)
    {
        var processes = new Dictionary<int, ProcessDescription>();
        ProcessDescription Describe(int pid)
        {
            if (!processes.TryGetValue(pid, out var p)) processes[pid] = p = ReadProcess(pid);
            return p;
        }
        var scan = new DescriptorScan(Describe);
        IEnumerable<string> pidDirs;
        try
        {
            pidDirs = Directory.EnumerateDirectories(_proc);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            scan.Uninspectable++;
            return scan;
        }
        foreach (var dir in pidDirs)
        {
            if (!int.TryParse(System.IO.Path.GetFileName(dir), NumberStyles.None, CultureInfo.InvariantCulture, out int pid)) continue;
            bool unreadable = false;
            try
            {
                foreach (var fdPath in Directory.EnumerateFileSystemEntries(System.IO.Path.Combine(dir, "fd")))
                {
                    if (!int.TryParse(System.IO.Path.GetFileName(fdPath), NumberStyles.None, CultureInfo.InvariantCulture, out int fd)) continue;
                    FileIdentity id;
                    try
                    {
                        id = FileIdentity.OfPath(fdPath);
                    }
                    catch (NativeIOException e) when (e.Errno is Errno.EACCES or Errno.EPERM)
                    {
                        unreadable = true;
                        continue;
                    }
                    catch (NativeIOException)
                    {
                        continue; // closed meanwhile
                    }
                    if (!wanted.Contains(id)) continue;
                    List<KernelLock> locks;
                    try
                    {
                        locks = ReadFdInfoLocks(System.IO.Path.Combine(dir, "fdinfo", fd.ToString(CultureInfo.InvariantCulture)));
                    }
                    catch (UnauthorizedAccessException)
                    {
                        unreadable = true;
                        continue;
                    }
                    catch (IOException)
                    {
                        continue;
                    }
                    if (!scan.Descriptors.TryGetValue(id, out var list)) scan.Descriptors[id] = list = new List<DescriptorLocks>();
                    list.Add(new DescriptorLocks(Describe(pid), fd, locks));
                }
            }
            catch (UnauthorizedAccessException)
            {
                unreadable = true;
            }
            catch (IOException)
            {
                // The process exited while we looked.
            }
            if (unreadable) scan.Uninspectable++;
        }
        return scan;
    }

    private static List<KernelLock> ReadFdInfoLocks(string path)
    {
        var result = new List<KernelLock>();
        foreach (var line in System.IO.File.ReadLines(path))
            if (line.StartsWith("lock:", StringComparison.Ordinal) && KernelLock.Parse(line) is { } l) result.Add(l);
        return result;
    }

    /// <summary>Shell-style single quotes around words that would not read back as one word.</summary>
    internal static string QuoteArgument(string word)
    {
        if (word.Length > 0 && word.All(c => char.IsAsciiLetterOrDigit(c) || "-_./=:,+@%".Contains(c))) return word;
        return "'" + word.Replace("'", "'\\''") + "'";
    }

    private ProcessDescription ReadProcess(int pid)
    {
        string dir = System.IO.Path.Combine(_proc, pid.ToString(CultureInfo.InvariantCulture));
        string? commandLine = null;
        string? command = null;
        try
        {
            var raw = System.IO.File.ReadAllBytes(System.IO.Path.Combine(dir, "cmdline"));
            var args = Encoding.UTF8.GetString(raw).Split('\0');
            int count = args.Length;
            while (count > 0 && args[count - 1].Length == 0) count--;
            if (count > 0)
            {
                commandLine = string.Join(' ', args.Take(count).Select(QuoteArgument));
                command = System.IO.Path.GetFileName(args[0]);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        if (string.IsNullOrEmpty(command))
        {
            try
            {
                command = System.IO.File.ReadAllText(System.IO.Path.Combine(dir, "comm")).TrimEnd('\n');
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        }
        return new ProcessDescription(pid, string.IsNullOrEmpty(command) ? null : command, commandLine);
    }
}
