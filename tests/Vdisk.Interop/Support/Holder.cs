using Vdisk.Inspection;

namespace Vdisk.Interop.Support;

/// <summary>
/// A long-running process that has an image open (qemu-io -c 'sleep', qemu-nbd, qemu-system,
/// vdisk io, LockProbe hold). Start returns once the process has the image open and its lock
/// bytes have settled, and throws if that never happens; Dispose kills it and waits, so its OFD
/// locks are gone.
/// </summary>
public sealed class Holder : IDisposable
{
    /// <summary>How many polls in a row must see the same lock bytes before they count as settled.</summary>
    private const int SettledPolls = 3;

    private readonly ChildProcess _process;
    public string Image { get; }
    public int Pid => _process.Pid;

    /// <summary>The running holder: its exact output, exit and signals.</summary>
    public ChildProcess Process => _process;

    private Holder(ChildProcess process, string image)
    {
        _process = process;
        Image = image;
    }

    public static Holder Start(string image, string file, params string[] args) => Start(image, file, args, env: null);

    /// <summary>
    /// Starts a holder and returns once its lock bytes satisfy <paramref name="ready"/> and have
    /// settled: for programs that take their locks in steps with pauses longer than the settle
    /// polls (a VM attaches its disk well after opening it, the more so on a loaded machine).
    /// </summary>
    public static Holder Start(string image, string file, IEnumerable<string> args, Func<IReadOnlySet<int>, bool> ready) => Start(image, file, args, null, ready);

    public static Holder Start(string image, string file, IEnumerable<string> args, IDictionary<string, string>? env, Func<IReadOnlySet<int>, bool>? ready = null)
    {
        var holder = new Holder(ChildProcess.Start(file, args, env), image);
        try
        {
            // LockProbe says when it holds the image; other programs are watched from outside.
            if (file == Programs.LockProbe) holder._process.WaitFor((stdout, _) => stdout.StartsWith("held", StringComparison.Ordinal), "held the image");
            else holder.WaitUntilSettled(ready ?? (_ => true));
        }
        catch
        {
            holder.Dispose();
            throw;
        }
        return holder;
    }

    /// <summary>
    /// Polls until the process has the image open and its lock bytes read the same
    /// <see cref="SettledPolls"/> times in a row (QEMU takes and adjusts its locks during
    /// start-up, as devices attach); throws when that has not happened by the deadline.
    /// </summary>
    private void WaitUntilSettled(Func<IReadOnlySet<int>, bool> ready)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        string target = Path.GetFullPath(Image);
        var history = new List<string>();
        string? last = null;
        long lastCpu = -1;
        int same = 0;
        while (true)
        {
            if (_process.HasExited)
            {
                var r = _process.Result();
                throw new InvalidOperationException($"holder exited with {r.ExitCode} before holding {Image}: {r.Stderr}");
            }
            if (ImageDescriptors(_process.Pid, target).Count > 0)
            {
                var now = LockBytesHeld.Read(_process.Pid, target);
                // Per descriptor: QEMU moves its locks to a new descriptor when a device attaches
                // (the read-only one takes the new bytes, then the read-write one, then the first
                // is closed), and the union of both reads the same as the end state.
                string perDescriptor = LockBytesHeld.DescribeByDescriptor(_process.Pid, target);
                // A holder still starting (running, or runnable but not scheduled on a loaded
                // machine) may have the image open and its locks not yet taken: only polls that
                // find it idle, having used no CPU since the last one, count.
                var cpu = ProcessState.CpuTicks(_process.Pid);
                bool idle = cpu is { } c && c.Ticks == lastCpu && c.Idle;
                lastCpu = cpu?.Ticks ?? -1;
                same = idle && last == perDescriptor ? same + 1 : 1;
                if (same == 1) history.Add("[" + perDescriptor + "]");
                if (same >= SettledPolls && ready(now)) return;
                last = perDescriptor;
            }
            if (DateTime.UtcNow > deadline)
                throw new TimeoutException($"holder never settled on {Image} in the expected state; lock bytes seen: {string.Join(" ", history)}");
            // The pause between polls ends early if the holder exits.
            _process.WaitForExit(TimeSpan.FromMilliseconds(40));
        }
    }

    /// <summary>Descriptors of <paramref name="pid"/> that refer to <paramref name="path"/>.</summary>
    public static List<int> ImageDescriptors(int pid, string path)
    {
        var result = new List<int>();
        string full = Path.GetFullPath(path);
        try
        {
            foreach (var fdPath in Directory.EnumerateFileSystemEntries($"/proc/{pid}/fd"))
            {
                try
                {
                    var target = new FileInfo(fdPath).LinkTarget;
                    if (target == full && int.TryParse(Path.GetFileName(fdPath), out int fd)) result.Add(fd);
                }
                catch (IOException) { }
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        return result;
    }

    public void Dispose() => _process.Dispose();
}

/// <summary>The QEMU lock bytes (100-104, 200-204) a process holds on an image, from /proc/PID/fdinfo.</summary>
public static class LockBytesHeld
{
    public static SortedSet<int> Read(int pid, string image)
    {
        var bytes = new SortedSet<int>();
        foreach (int fd in Holder.ImageDescriptors(pid, image)) bytes.UnionWith(Read(pid, fd));
        return bytes;
    }

    public static string Describe(IEnumerable<int> bytes) => string.Join(",", bytes);

    /// <summary>Each descriptor of the image with the lock bytes it holds, as "fd:bytes" joined by spaces.</summary>
    public static string DescribeByDescriptor(int pid, string image) =>
        string.Join(" ", Holder.ImageDescriptors(pid, image).Order().Select(fd => $"{fd}:{Describe(Read(pid, fd))}"));

    private static SortedSet<int> Read(int pid, int fd)
    {
        var bytes = new SortedSet<int>();
        List<KernelLock> locks;
        try
        {
            locks = KernelLock.ReadFdInfo(pid, fd);
        }
        catch (IOException)
        {
            return bytes;
        }
        foreach (var l in locks)
            foreach (int b in new[] { 100, 101, 102, 103, 104, 200, 201, 202, 203, 204 })
                if (l.Covers(b)) bytes.Add(b);
        return bytes;
    }
}
