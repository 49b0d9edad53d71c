using Vdisk.Graph;

namespace Vdisk.Drivers.Qcow2;

// qcow2_change_backing_file: the backing file name and format stored in cluster 0.
public sealed partial class Qcow2Node
{
    /// <inheritdoc />
    public override bool CanChangeBackingFile => true;

    /// <summary>
    /// Rewrites the backing file name and format in cluster 0 (qemu-img rebase, amend). A null
    /// name removes both.
    /// </summary>
    public override async ValueTask ChangeBackingFileAsync(string? name, string? format, CancellationToken ct = default)
    {
        EnsureWritable();
        await LockQuiescedAsync(ct).ConfigureAwait(false);
        try
        {
            await FlushLockedAsync(ct).ConfigureAwait(false);
            string? oldName = _header.BackingFile, oldFormat = _header.BackingFormat;
            _header.BackingFile = name;
            _header.BackingFormat = name is null ? null : format;
            byte[] cluster0;
            try
            {
                cluster0 = _header.Serialize();
            }
            catch
            {
                _header.BackingFile = oldName;
                _header.BackingFormat = oldFormat;
                throw;
            }
            await File.WriteAsync(0, cluster0, WriteFlags.None, ct).ConfigureAwait(false);
            await SyncFileAsync().ConfigureAwait(false);
        }
        finally
        {
            _lock.Release();
        }
    }
}
