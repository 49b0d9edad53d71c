namespace Vdisk.Native;

/// <summary>This process's command line as the kernel keeps it (/proc/self/cmdline).</summary>
public static class ProcessCommandLine
{
    /// <summary>
    /// argv[0] as the process was started (a symlink's name stays the symlink's), or null when
    /// /proc/self/cmdline cannot be read. open(2) and read(2): File.ReadAllBytes would first
    /// initialise SafeFileHandle's statics and with them the runtime's AppContext settings,
    /// 5% of a one-shot command's CPU time (docs/architecture.md, "Start-up").
    /// </summary>
    public static unsafe string? ProgramPath()
    {
        using var handle = LibC.Open("/proc/self/cmdline", LibC.O_RDONLY | LibC.O_CLOEXEC, 0);
        if (handle.IsInvalid) return null;
        var buffer = new byte[4096];
        int length = 0;
        while (true)
        {
            int end = Array.IndexOf(buffer, (byte)0, 0, length);
            if (end >= 0) return System.Text.Encoding.UTF8.GetString(buffer, 0, end);
            if (length == buffer.Length) Array.Resize(ref buffer, buffer.Length * 2);
            nint n;
            fixed (byte* p = &buffer[length]) n = LibC.Read(handle, p, (nuint)(buffer.Length - length));
            if (n < 0 && LibC.LastError == Errno.EINTR) continue;
            if (n < 0) return null;
            if (n == 0) return System.Text.Encoding.UTF8.GetString(buffer, 0, length);
            length += (int)n;
        }
    }
}
