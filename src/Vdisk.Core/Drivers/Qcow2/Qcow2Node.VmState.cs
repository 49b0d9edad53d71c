using Vdisk.Native;

namespace Vdisk.Drivers.Qcow2;

/// <summary>
/// The VM state area (qcow2_save_vmstate, qcow2_load_vmstate): guest offsets from the first L2
/// table past the disk's end (qcow2_vm_state_offset), where savevm keeps a VM's memory and
/// devices. It is mapped through the same L1/L2 tables as the disk, so internal snapshots keep it.
/// </summary>
public sealed partial class Qcow2Node
{
    /// <summary>qcow2_vm_state_offset: the first guest offset past the L2 tables the disk needs.</summary>
    public long VmStateOffset => _g.L1EntriesFor(Length) * _g.BytesPerL2Table;

    /// <inheritdoc />
    public override async ValueTask SaveVmStateAsync(long position, ReadOnlyMemory<byte> data, CancellationToken cancellationToken = default)
    {
        EnsureWritable();
        if (data.IsEmpty) return;
        long offset = VmStateOffset + position;
        long needed = _g.L1Index(offset + data.Length - 1) + 1;
        if (needed > _l1.Length)
        {
            await _lock.WaitAsync(cancellationToken).ConfigureAwait(false);
            try
            {
                // qcow2_grow_l1_table without exact_size: half as large again until it fits.
                long entries = Math.Max(1, _l1.Length);
                while (entries < needed) entries = (entries * 3 + 1) / 2;
                if (needed > _l1.Length) await GrowL1LockedAsync(entries).ConfigureAwait(false);
            }
            finally
            {
                _lock.Release();
            }
        }
        await WriteAsync(offset, data, Graph.WriteFlags.None, cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public override ValueTask LoadVmStateAsync(long position, Memory<byte> buffer, CancellationToken cancellationToken = default) =>
        ReadAsync(VmStateOffset + position, buffer, cancellationToken);
}
