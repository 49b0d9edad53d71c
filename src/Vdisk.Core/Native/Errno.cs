namespace Vdisk.Native;

/// <summary>Linux errno values the library reports.</summary>
public static class Errno
{
    /// <summary>EPERM.</summary>
    public const int EPERM = 1;
    /// <summary>ENOENT.</summary>
    public const int ENOENT = 2;
    /// <summary>EINTR.</summary>
    public const int EINTR = 4;
    /// <summary>EIO.</summary>
    public const int EIO = 5;
    /// <summary>ENXIO.</summary>
    public const int ENXIO = 6;
    /// <summary>EAGAIN.</summary>
    public const int EAGAIN = 11;
    /// <summary>ENOMEM.</summary>
    public const int ENOMEM = 12;
    /// <summary>EACCES.</summary>
    public const int EACCES = 13;
    /// <summary>EEXIST.</summary>
    public const int EEXIST = 17;
    /// <summary>ENODEV.</summary>
    public const int ENODEV = 19;
    /// <summary>ENOTDIR.</summary>
    public const int ENOTDIR = 20;
    /// <summary>EISDIR.</summary>
    public const int EISDIR = 21;
    /// <summary>EINVAL.</summary>
    public const int EINVAL = 22;
    /// <summary>EFBIG.</summary>
    public const int EFBIG = 27;
    /// <summary>ENOSPC.</summary>
    public const int ENOSPC = 28;
    /// <summary>EROFS.</summary>
    public const int EROFS = 30;
    /// <summary>EPIPE.</summary>
    public const int EPIPE = 32;
    /// <summary>ERANGE.</summary>
    public const int ERANGE = 34;
    /// <summary>ENOLCK.</summary>
    public const int ENOLCK = 37;
    /// <summary>ELOOP.</summary>
    public const int ELOOP = 40;
    /// <summary>EOVERFLOW.</summary>
    public const int EOVERFLOW = 75;
    /// <summary>ENOTSUP.</summary>
    public const int ENOTSUP = 95;
    /// <summary>EOPNOTSUPP (the same value as ENOTSUP on Linux).</summary>
    public const int EOPNOTSUPP = 95;
    /// <summary>ESHUTDOWN.</summary>
    public const int ESHUTDOWN = 108;
    /// <summary>No medium found (a node whose driver gave up after corruption).</summary>
    public const int ENOMEDIUM = 123;
}

/// <summary>An I/O failure from the kernel, carrying errno and the file it concerns.</summary>
public sealed class NativeIOException : IOException
{
    /// <summary>The errno value.</summary>
    public int Errno { get; }

    /// <summary>The file concerned, or null.</summary>
    public string? Path { get; }

    /// <summary>Creates the exception with QEMU-style wording: <c>MESSAGE</c>.</summary>
    public NativeIOException(int errno, string message, string? path = null) : base(message, errno)
    {
        Errno = errno;
        Path = path;
    }

    /// <summary>The kernel's text for <paramref name="errno"/> (strerror).</summary>
    public static string Describe(int errno) => LibC.StrError(errno);

    /// <summary>
    /// What QEMU prints for a failed request, strerror(-ret): the errno's text for a kernel
    /// error, the message of any other I/O error.
    /// </summary>
    public static string ErrorText(IOException e) => e is NativeIOException n ? Describe(n.Errno) : e.Message;
}
