using System.Runtime.InteropServices;
using System.Text;

namespace Vdisk.Native;

/// <summary>
/// QEMU's create_tmp_file: the empty file that a temporary snapshot overlay (<c>qemu-io -s</c>,
/// <c>snapshot=on</c>) is created in, <c>vl.XXXXXX</c> in <c>$TMPDIR</c>, with <c>/var/tmp</c>
/// standing in for <c>/tmp</c> because overlays can grow as large as the disk and /tmp is often
/// a tmpfs.
/// </summary>
public static partial class TemporaryFile
{
    /// <summary>The directory overlays go to, from the value of <c>TMPDIR</c> (null or empty: unset).</summary>
    public static string DirectoryFor(string? tmpdir)
    {
        string dir = string.IsNullOrEmpty(tmpdir) ? "/tmp" : tmpdir;
        return dir == "/tmp" ? "/var/tmp" : dir;
    }

    /// <summary>Creates a new empty file (mkstemp, mode 0600) and returns its name.</summary>
    /// <exception cref="NativeIOException">QEMU's "Could not open temporary file".</exception>
    public static string Create()
    {
        string template = DirectoryFor(Environment.GetEnvironmentVariable("TMPDIR")) + "/vl.XXXXXX";
        byte[] buffer = Encoding.UTF8.GetBytes(template + "\0");
        int fd = MkStemp(buffer);
        if (fd < 0)
        {
            int errno = LibC.LastError;
            throw new NativeIOException(errno, $"Could not open temporary file '{template}': {NativeIOException.Describe(errno)}");
        }
        Close(fd);
        return Encoding.UTF8.GetString(buffer, 0, buffer.Length - 1);
    }

    // mkstemp fills in the XXXXXX of the buffer it is given, so the buffer is passed both ways.
    [LibraryImport(LibC.Lib, EntryPoint = "mkstemp", SetLastError = true)]
    private static partial int MkStemp([In, Out] byte[] template);

    [LibraryImport(LibC.Lib, EntryPoint = "close")]
    private static partial int Close(int fd);
}
