namespace Vdisk.Native;

/// <summary>Identifies a file by device and inode: locks are per inode, not per path.</summary>
public readonly record struct FileIdentity(uint DevMajor, uint DevMinor, ulong Inode)
{
    /// <summary>The form /proc/locks uses: <c>fe:00:11657375</c> (hex device numbers).</summary>
    public override string ToString() => $"{DevMajor:x2}:{DevMinor:x2}:{Inode}";

    /// <summary>The device and inode <paramref name="path"/> refers to, following symbolic links (stat, not lstat).</summary>
    /// <exception cref="NativeIOException">stat failed; the message is strerror's text.</exception>
    public static unsafe FileIdentity OfPath(string path)
    {
        StatXBuffer st;
        if (LibC.StatX(path, 0, &st) != 0) throw LibC.LastErrorException(null, path);
        return new FileIdentity(st.DevMajor, st.DevMinor, st.Inode);
    }
}
