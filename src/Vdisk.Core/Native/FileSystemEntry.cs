namespace Vdisk.Native;

/// <summary>What a path names, without following a final symbolic link (lstat).</summary>
public enum FileSystemEntryKind
{
    /// <summary>Nothing there.</summary>
    Missing,
    /// <summary>A regular file.</summary>
    RegularFile,
    /// <summary>A directory.</summary>
    Directory,
    /// <summary>A unix domain socket.</summary>
    Socket,
    /// <summary>Anything else (device, fifo, link).</summary>
    Other,
}

/// <summary>
/// lstat of a path: used by the daemon to tell a stale unix socket it may replace from a file
/// it must not touch, and to remove only the socket it created.
/// </summary>
public static class FileSystemEntry
{
    /// <summary>The kind of entry at <paramref name="path"/>.</summary>
    public static unsafe FileSystemEntryKind KindOf(string path)
    {
        StatXBuffer st;
        if (LibC.StatX(path, LibC.AT_SYMLINK_NOFOLLOW, &st) != 0) return FileSystemEntryKind.Missing;
        return (st.Mode & LibC.S_IFMT) switch
        {
            LibC.S_IFREG => FileSystemEntryKind.RegularFile,
            LibC.S_IFDIR => FileSystemEntryKind.Directory,
            LibC.S_IFSOCK => FileSystemEntryKind.Socket,
            _ => FileSystemEntryKind.Other,
        };
    }

    /// <summary>
    /// True when <paramref name="path"/> (following links) is a character or block device:
    /// hdev_probe_device's test, which makes QEMU open such a name with host_device.
    /// </summary>
    public static unsafe bool IsDevice(string path)
    {
        StatXBuffer st;
        if (LibC.StatX(path, 0, &st) != 0) return false;
        int type = st.Mode & LibC.S_IFMT;
        return type is LibC.S_IFCHR or LibC.S_IFBLK;
    }

    /// <summary>Device and inode of the entry at <paramref name="path"/>, or null when missing.</summary>
    public static unsafe FileIdentity? IdentityOf(string path)
    {
        StatXBuffer st;
        if (LibC.StatX(path, LibC.AT_SYMLINK_NOFOLLOW, &st) != 0) return null;
        return new FileIdentity(st.DevMajor, st.DevMinor, st.Inode);
    }

    /// <summary>
    /// Null when <paramref name="path"/> (following links) is a regular file, else why not in
    /// QEMU's words (is_regular_file of the FUSE export).
    /// </summary>
    public static unsafe string? WhyNotRegularFile(string path)
    {
        StatXBuffer st;
        if (LibC.StatX(path, 0, &st) != 0) return $"Failed to stat '{path}': {LibC.StrError(LibC.LastError)}";
        return (st.Mode & LibC.S_IFMT) == LibC.S_IFREG ? null : $"'{path}' is not a regular file";
    }
}
