using Vdisk.Graph;

namespace Vdisk.Drivers.Raw;

/// <summary>Options of the <c>raw</c> format: file, offset, size.</summary>
public sealed class RawDriver : IBlockDriver
{
    /// <inheritdoc />
    public string Name => "raw";

    /// <inheritdoc />
    public bool IsProtocol => false;

    /// <inheritdoc />
    public BlockNode Open(NodeOpenContext context)
    {
        var offset = context.Options.TakeSize("offset");
        var size = context.Options.TakeSize("size");
        var file = context.OpenChild("file");
        context.Options.EnsureAllUsed(Name, isProtocol: false);
        return RawNode.Open(context.NodeName, context.Flags, file, offset, size);
    }
}
