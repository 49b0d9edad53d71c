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
}
