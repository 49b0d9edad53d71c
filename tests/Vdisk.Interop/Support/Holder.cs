using System.Diagnostics;
using Vdisk.Inspection;

namespace Vdisk.Interop.Support;

/// <summary>
/// A long-running process that has an image open (qemu-io -c 'sleep', qemu-nbd, qemu-system,
/// vdisk io, LockProbe hold). Start waits until the process has the image open and its lock
/// bytes have settled; Dispose kills it and waits, so its OFD locks are gone.
/// </summary>
public sealed class Holder : IDisposable
{
    private readonly Process _process;
    public string Image { get; }
    public int Pid => _process.Id;
    public Process Process => _process;

    private Holder(Process process, string image)
    {
        _process = process;
        Image = image;
    }

    public static Holder Start(string image, string file, params string[] args) => Start(image, file, args, null);

    public static Holder Start(string image, string file, IEnumerable<string> args, IDictionary<string, string>? env)
    {
        var p = Process.Start(Programs.StartInfo(file, args, env))!;
        var holder = new Holder(p, image);
        try
        {
            holder.WaitUntilOpen();
        }
        catch
        {
            holder.Dispose();
            throw;
        }
        return holder;
    }

    private void WaitUntilOpen()
    {
        var watch = Stopwatch.StartNew();
        string target = Path.GetFullPath(Image);
        while (watch.Elapsed < TimeSpan.FromSeconds(30))
        {
            if (_process.HasExited)
                throw new InvalidOperationException($"holder exited with {_process.ExitCode}: {_process.StandardError.ReadToEnd()}");
            if (ImageDescriptors(_process.Id, target).Count > 0)
            {
                // Locks follow the open within the same start-up step; let it finish, then check that
                // the lock bytes stopped changing.
                var last = LockBytesHeld.Read(_process.Id, target);
                for (int i = 0; i < 5; i++)
                {
                    Thread.Sleep(40);
                    var now = LockBytesHeld.Read(_process.Id, target);
                    if (now.SetEquals(last) && i >= 2) return;
                    last = now;
                }
                return;
            }
            Thread.Sleep(10);
        }
        throw new TimeoutException($"holder never opened {Image}");
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

    public void Dispose()
    {
        try
        {
            if (!_process.HasExited)
            {
                _process.Kill(true);
            }
            _process.WaitForExit(10_000);
        }
        catch (InvalidOperationException) { }
        _process.Dispose();
    }
}

/// <summary>The QEMU lock bytes (100-104, 200-204) a process holds on an image, from /proc/PID/fdinfo.</summary>
public static class LockBytesHeld
{
    public static SortedSet<int> Read(int pid, string image)
    {
        var bytes = new SortedSet<int>();
        foreach (int fd in Holder.ImageDescriptors(pid, image))
        {
            List<KernelLock> locks;
            try
            {
                locks = KernelLock.ReadFdInfo(pid, fd);
            }
            catch (IOException)
            {
                continue;
            }
            foreach (var l in locks)
                foreach (int b in new[] { 100, 101, 102, 103, 104, 200, 201, 202, 203, 204 })
                    if (l.Covers(b)) bytes.Add(b);
        }
        return bytes;
    }

    public static string Describe(IEnumerable<int> bytes) => string.Join(",", bytes);
}
