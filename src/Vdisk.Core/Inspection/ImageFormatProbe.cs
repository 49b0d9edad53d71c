using Vdisk.Locking;
using Vdisk.Native;

namespace Vdisk.Inspection;

/// <summary>
/// The format QEMU's tools pick for an image given without <c>-f</c>: qcow2 when the file starts
/// with qcow2's magic, raw otherwise (vdisk knows no other format). The lock request of an open
/// depends on it (a qcow2 opener refuses to share write and resize), so a verdict for
/// <c>qemu-io -r disk</c> must assume what qemu-io will find.
/// </summary>
public static class ImageFormatProbe
{
    /// <summary>"qcow2" or "raw"; null when the file cannot be read.</summary>
    public static unsafe string? Probe(string path)
    {
        // Non-blocking: a FIFO among scanned files must not stall the probe.
        var handle = LibC.Open(path, LibC.O_RDONLY | LibC.O_CLOEXEC | LibC.O_NONBLOCK, 0);
        if (handle.IsInvalid)
        {
            handle.Dispose();
            return null;
        }
        StatXBuffer st;
        if (LibC.FStatX(handle, &st) != 0 || (st.Mode & LibC.S_IFMT) != LibC.S_IFREG)
        {
            handle.Dispose();
            return null;
        }
        // Closing a descriptor drops this process's POSIX locks on the file: the table defers it while any are held.
        var identity = new FileIdentity(st.DevMajor, st.DevMinor, st.Inode);
        ProcessInodeTable.Opened(identity);
        try
        {
            Span<byte> head = stackalloc byte[4];
            int n = RandomAccess.Read(handle, head, 0);
            return Graph.GraphOpener.LooksLikeOtherFormat(head[..n]) ? "qcow2" : "raw";
        }
        catch (IOException)
        {
            return null;
        }
        finally
        {
            ProcessInodeTable.Close(identity, handle);
        }
    }
}
