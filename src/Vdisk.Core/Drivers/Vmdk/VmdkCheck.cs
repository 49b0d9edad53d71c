using Vdisk.Native;

namespace Vdisk.Drivers.Vmdk;

/// <summary>
/// QEMU's vmdk_co_check: every grain of every extent is looked up, and an allocated one must
/// start inside its extent file. The first problem ends the check with a line on stderr and an
/// error (qemu-img then says "Check failed: ..."); repairs are not supported.
/// </summary>
internal static class VmdkCheck
{
    /// <summary>Checks <paramref name="node"/>; <paramref name="log"/> receives QEMU's "ERROR: ..." lines.</summary>
    /// <exception cref="NativeIOException">ENOTSUP for a repair; EINVAL or EPERM (QEMU's VMDK_ERROR) when a grain is bad.</exception>
    public static async Task<ImageCheck> RunAsync(VmdkNode node, RepairMode mode, Action<string>? log, CancellationToken ct = default)
    {
        if (mode != RepairMode.None) throw new NativeIOException(Errno.ENOTSUP, NativeIOException.Describe(Errno.ENOTSUP));
        long total = node.Length / 512;
        long sector = 0;
        while (sector < total)
        {
            var extent = node.Extents.FirstOrDefault(e => sector < e.EndSector);
            if (extent is null)
            {
                log?.Invoke($"ERROR: could not find extent for sector {sector}");
                throw Fail(Errno.EINVAL);
            }
            VmdkGrain? grain;
            try
            {
                grain = await extent.LookupAsync(sector << 9, ct).ConfigureAwait(false);
            }
            catch (IOException)
            {
                grain = null;
            }
            if (grain is null)
            {
                log?.Invoke($"ERROR: could not get cluster_offset for sector {sector}");
                // get_cluster_offset's VMDK_ERROR is -1, which qemu-img reports as -EPERM.
                throw Fail(Errno.EPERM);
            }
            if (grain.Value.Kind == VmdkGrainKind.Allocated && grain.Value.HostOffset >= extent.File.Node.Length)
            {
                log?.Invoke($"ERROR: cluster offset for sector {sector} points after EOF");
                throw Fail(Errno.EINVAL);
            }
            sector += extent.GrainSectors;
        }
        return new ImageCheck();
    }

    private static NativeIOException Fail(int errno) => new(errno, NativeIOException.Describe(errno));
}
