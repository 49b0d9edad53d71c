using Vdisk.Graph;
using Vdisk.Permissions;

namespace Vdisk.Drivers.Vhdx;

/// <summary>Options of the <c>vhdx</c> format: only the file child.</summary>
public sealed class VhdxDriver : IBlockDriver
{
    /// <inheritdoc />
    public string Name => "vhdx";

    /// <inheritdoc />
    public bool IsProtocol => false;

    /// <inheritdoc />
    public BlockNode Open(NodeOpenContext context)
    {
        var file = context.OpenChild("file");
        context.Options.EnsureAllUsed(Name, isProtocol: false);
        bool check = (context.OpenFlags & OpenFlags.Check) != 0;
        return VhdxNode.OpenAsync(context.NodeName, context.Flags, file, check).GetAwaiter().GetResult();
    }

    /// <summary>vhdx_probe: the file identifier's "vhdxfile".</summary>
    public static bool Probe(ReadOnlySpan<byte> head) => head.Length >= 8 && head[..8].SequenceEqual(VhdxLayout.FileSignature);
}
