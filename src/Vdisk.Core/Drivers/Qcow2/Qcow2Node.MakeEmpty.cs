namespace Vdisk.Drivers.Qcow2;

// qcow2_make_empty: the active layer dropped so that the backing file shows through (qemu-img commit).
public sealed partial class Qcow2Node
{
    /// <summary>Drops every cluster of the active layer (qemu-img commit empties the top): all ranges fall through to the backing file again.</summary>
    public override async ValueTask MakeEmptyAsync(CancellationToken ct = default)
    {
        EnsureWritable();
        await LockQuiescedAsync(ct).ConfigureAwait(false);
        try
        {
            await DiscardClustersLockedAsync(0, Length, fullDiscard: true).ConfigureAwait(false);
            await FlushLockedAsync(ct).ConfigureAwait(false);
        }
        finally
        {
            _lock.Release();
        }
    }
}
