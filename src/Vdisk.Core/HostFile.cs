using Vdisk.Drivers.File;
using Vdisk.Options;
using Vdisk.Permissions;

namespace Vdisk;

/// <summary>Plain files that are not images (qemu-io's <c>write -s</c> pattern source).</summary>
public static class HostFile
{
    /// <summary>
    /// Reads the start of <paramref name="path"/> into <paramref name="buffer"/>, stopping at its
    /// real end (no rounding to whole sectors); returns the bytes read. The file is opened
    /// through the file driver without locks, so that its descriptor is bookkept like an image's
    /// (closing it cannot drop this process's POSIX locks on the same inode).
    /// </summary>
    /// <exception cref="Native.NativeIOException">The file could not be opened or read.</exception>
    public static async Task<int> ReadPrefixAsync(string path, Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        var options = new OptionDict();
        options.Set("driver", Drivers.File.FileDriver.ProtocolFor(path));
        options.Set("filename", path);
        options.Set("locking", "off");
        await using var file = DiskImage.Open(ImageSource.FromOptions(options), OpenFlags.None);
        var handle = ((FileNode)file.Root).Handle;
        int length = 0;
        while (length < buffer.Length)
        {
            int n = await RandomAccess.ReadAsync(handle, buffer[length..], length, cancellationToken).ConfigureAwait(false);
            if (n == 0) break;
            length += n;
        }
        return length;
    }

    /// <summary>
    /// Reads a small text file (blkdebug's config file) whole, as UTF-8. Bookkept like an image's
    /// descriptor, so closing it cannot drop this process's POSIX locks on the same inode.
    /// </summary>
    /// <exception cref="Native.NativeIOException">The file could not be opened or read (errno set).</exception>
    public static unsafe string ReadAllText(string path)
    {
        var handle = Native.LibC.Open(path, Native.LibC.O_RDONLY | Native.LibC.O_CLOEXEC, 0);
        if (handle.IsInvalid)
        {
            int errno = Native.LibC.LastError;
            handle.Dispose();
            throw new Native.NativeIOException(errno, Native.NativeIOException.Describe(errno), path);
        }
        Native.StatXBuffer st;
        if (Native.LibC.FStatX(handle, &st) != 0)
        {
            int errno = Native.LibC.LastError;
            handle.Dispose();
            throw new Native.NativeIOException(errno, Native.NativeIOException.Describe(errno), path);
        }
        var identity = new Native.FileIdentity(st.DevMajor, st.DevMinor, st.Inode);
        Locking.ProcessInodeTable.Opened(identity);
        try
        {
            var bytes = new List<byte>();
            var chunk = new byte[4096];
            long offset = 0;
            int n;
            while ((n = RandomAccess.Read(handle, chunk, offset)) > 0)
            {
                bytes.AddRange(chunk.AsSpan(0, n));
                offset += n;
            }
            return System.Text.Encoding.UTF8.GetString(bytes.ToArray());
        }
        catch (IOException e) when (e is not Native.NativeIOException)
        {
            throw new Native.NativeIOException(Native.Errno.EIO, e.Message, path);
        }
        finally
        {
            Locking.ProcessInodeTable.Close(identity, handle);
        }
    }
}
