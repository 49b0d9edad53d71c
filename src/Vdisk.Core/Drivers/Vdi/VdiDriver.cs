using Vdisk.Graph;

namespace Vdisk.Drivers.Vdi;

/// <summary>Options of the <c>vdi</c> format: only the file child.</summary>
public sealed class VdiDriver : IBlockDriver
{
    /// <inheritdoc />
    public string Name => "vdi";

    /// <inheritdoc />
    public bool IsProtocol => false;

    /// <inheritdoc />
    public BlockNode Open(NodeOpenContext context)
    {
        var file = context.OpenChild("file");
        context.Options.EnsureAllUsed(Name, isProtocol: false);
        return VdiNode.OpenAsync(context.NodeName, context.Flags, file).GetAwaiter().GetResult();
    }
}
