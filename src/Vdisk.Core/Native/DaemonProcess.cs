using Microsoft.Win32.SafeHandles;
using Vdisk.Locking;

namespace Vdisk.Native;

/// <summary>
/// The process side of qemu-storage-daemon's <c>--daemonize</c> and <c>--pidfile</c>
/// (os_daemonize, os_setup_post, qemu_write_pidfile), as syscalls without decisions.
/// </summary>
public static class DaemonProcess
{
    /// <summary>The first step of a daemon: its own session, no controlling terminal, umask 027.</summary>
    public static void Detach()
    {
        LibC.SetSid();
        LibC.Umask(0x17); // 027
    }

    /// <summary>
    /// The last step, once start-up succeeded: leave the working directory, send the standard
    /// streams to /dev/null, and write the one byte 0 that tells the waiting parent "ready".
    /// </summary>
    /// <returns>False when the parent could not be told (it is gone).</returns>
    public static unsafe bool FinishDetaching(int readyFd)
    {
        using var ready = new SafeFileHandle(readyFd, ownsHandle: true);
        LibC.ChDir("/");
        using (var devNull = LibC.Open("/dev/null", LibC.O_RDWR | LibC.O_CLOEXEC, default))
        {
            if (!devNull.IsInvalid)
            {
                // The runtime's console streams write through duplicates of descriptors 0-2: they
                // must let go of the terminal or pipe too, or whoever started us waits for its end.
                var stdio = new HashSet<FileIdentity>();
                for (int fd = 0; fd <= 2; fd++)
                    if (IdentityOf(fd) is { } id) stdio.Add(id);
                int devNullFd = (int)devNull.DangerousGetHandle();
                foreach (var entry in Directory.EnumerateFileSystemEntries("/proc/self/fd"))
                {
                    if (!int.TryParse(Path.GetFileName(entry), System.Globalization.CultureInfo.InvariantCulture, out int fd)) continue;
                    if (fd == devNullFd || fd == readyFd) continue;
                    if (fd <= 2 || (IdentityOf(fd) is { } id && stdio.Contains(id))) LibC.Dup2(devNull, fd);
                }
            }
        }
        byte status = 0;
        return LibC.Write(ready, &status, 1) == 1;
    }

    // The pid file's descriptor: it must stay open, and its lock held, for the life of the process.
    private static SafeFileHandle? s_pidFile;

    /// <summary>
    /// qemu_write_pidfile: creates (mode 0600) and write-locks <paramref name="path"/>, making
    /// sure the file locked is the one at the path, and writes the process id. The descriptor
    /// stays open (and the lock held) for the life of the process.
    /// </summary>
    /// <exception cref="NativeIOException">QEMU's message: <c>Could not create '…': …</c> or <c>Cannot lock pid file: …</c>.</exception>
    public static unsafe void WritePidFile(string path)
    {
        while (true)
        {
            var fd = LibC.Open(path, LibC.O_WRONLY | LibC.O_CREAT | LibC.O_CLOEXEC, UnixFileMode.UserRead | UnixFileMode.UserWrite);
            if (fd.IsInvalid)
            {
                var error = LibC.LastErrorException($"Could not create '{path}'", path);
                fd.Dispose();
                throw error;
            }
            var fl = new Flock { Type = LibC.F_WRLCK, Whence = LibC.SEEK_SET, Start = 0, Length = 0 };
            if (LibC.FcntlLock(fd, LibC.F_SETLK, ref fl) != 0)
            {
                var error = LibC.LastErrorException("Cannot lock pid file", path);
                fd.Dispose();
                throw error;
            }
            // Someone may have removed or replaced the file between open and lock: try again.
            if (IdentityOf(fd) is not { } opened || FileSystemEntry.IdentityOf(path) != opened)
            {
                fd.Dispose();
                continue;
            }
            LibC.FTruncate(fd, 0);
            var text = System.Text.Encoding.ASCII.GetBytes($"{Environment.ProcessId}\n");
            fixed (byte* p = text)
            {
                if (LibC.Write(fd, p, (nuint)text.Length) != text.Length)
                {
                    fd.Dispose();
                    LibC.Unlink(path);
                    throw new NativeIOException(Errno.EIO, "Failed to write pid file", path);
                }
            }
            s_pidFile = fd;
            return;
        }
    }

    private static FileIdentity? IdentityOf(int fd)
    {
        using var handle = new SafeFileHandle(fd, ownsHandle: false);
        return IdentityOf(handle);
    }

    private static unsafe FileIdentity? IdentityOf(SafeFileHandle fd)
    {
        StatXBuffer st;
        if (LibC.FStatX(fd, &st) != 0) return null;
        return new FileIdentity(st.DevMajor, st.DevMinor, st.Inode);
    }

    /// <summary>Removes the pid file on exit if it still names this process.</summary>
    public static void RemovePidFile(string fullPath)
    {
        try
        {
            if (File.ReadAllText(fullPath).Trim() == Environment.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture))
                LibC.Unlink(fullPath);
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }
}
