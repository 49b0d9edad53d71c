using Vdisk.Graph;

namespace Vdisk.Drivers.Bochs;

/// <summary>The <c>bochs</c> format: only the file child; read-only (no creation, no writes), as in QEMU.</summary>
public sealed class BochsDriver : IBlockDriver
{
    /// <inheritdoc />
    public string Name => "bochs";

    /// <inheritdoc />
    public bool IsProtocol => false;

    /// <inheritdoc />
    public BlockNode Open(NodeOpenContext context)
    {
        // As bochs_open: the read-only check comes before the file is opened, which then inherits it.
        context.ApplyAutoReadOnly();
        var file = context.OpenChild("file");
        context.Options.EnsureAllUsed(Name, isProtocol: false);
        return BochsNode.OpenAsync(context.NodeName, context.Flags, file).GetAwaiter().GetResult();
    }
}
