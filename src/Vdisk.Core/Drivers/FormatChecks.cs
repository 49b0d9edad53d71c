using Vdisk.Drivers.Vdi;
using Vdisk.Drivers.Vhdx;
using Vdisk.Graph;
using Vdisk.Native;

namespace Vdisk.Drivers;

/// <summary>
/// bdrv_check for the formats whose checks have no repair state of their own (vdi, vhdx), until
/// the verbs dispatch checks to drivers: the result, or null when the format has no check (vpc,
/// raw) or refuses to repair (vdi with -r), which qemu-img reports as "does not support checks".
/// </summary>
public static class FormatChecks
{
    /// <summary>
    /// Checks <paramref name="node"/>; <paramref name="printLine"/> receives lines QEMU prints as
    /// they are (fprintf), <paramref name="errorLine"/> those it prints with error_report.
    /// </summary>
    public static ImageCheck? Run(BlockNode node, bool repair, Action<string> printLine, Action<string> errorLine)
    {
        try
        {
            return node switch
            {
                VdiNode vdi => vdi.Check(repair, printLine),
                VhdxNode vhdx => vhdx.Check(errorLine),
                _ => null,
            };
        }
        catch (NativeIOException e) when (e.Errno == Errno.ENOTSUP)
        {
            return null;
        }
    }
}
