using Vdisk.Locking;
using Vdisk.Native;
using Vdisk.Options;

namespace Vdisk.Graph;

/// <summary>
/// bdrv_open_backing_file's error wording, for every format that names a backing file: a
/// failure to open it reads "Could not open backing file: " and the cause, keeping the cause's
/// kind (errno, lock conflict, option error) so callers and exit codes treat it the same.
/// </summary>
public static class BackingFileOpen
{
    /// <summary>What QEMU puts before the cause.</summary>
    public const string ErrorPrefix = "Could not open backing file: ";

    /// <summary>Runs <paramref name="open"/>, prefixing its failure as QEMU does.</summary>
    public static void Run(Action open)
    {
        try
        {
            open();
        }
        catch (NativeIOException e)
        {
            throw new NativeIOException(e.Errno, ErrorPrefix + e.Message, e.Path);
        }
        catch (LockConflictException e)
        {
            throw new LockConflictException(ErrorPrefix + e.Message, e.Filename, e.Offset, e.FromTest, e.Errno);
        }
        catch (OptionException e)
        {
            throw new OptionException(ErrorPrefix + e.Message);
        }
        catch (IOException e)
        {
            // A format's own damage report (bad header, bad descriptor...).
            throw new IOException(ErrorPrefix + e.Message, e);
        }
    }
}
