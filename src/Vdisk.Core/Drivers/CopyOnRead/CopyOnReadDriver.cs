using Vdisk.Graph;
using Vdisk.Options;

namespace Vdisk.Drivers.CopyOnRead;

/// <summary>
/// QEMU's <c>copy-on-read</c> filter (block/copy-on-read.c): reads through it copy what its
/// <c>file</c> child does not hold from the child's backing chain into the child.
/// </summary>
public sealed class CopyOnReadDriver : IBlockDriver
{
    /// <inheritdoc />
    public string Name => "copy-on-read";

    /// <inheritdoc />
    public bool IsProtocol => false;

    /// <inheritdoc />
    public BlockNode Open(NodeOpenContext context)
    {
        // 'bottom' limits the copy to the layers above a node; only block-stream jobs set it,
        // and vdisk has no jobs, so it is refused rather than ignored.
        if (context.Options.Has("bottom"))
            throw new OptionException("The copy-on-read option 'bottom' is not supported by vdisk");
        var file = context.OpenChild("file");
        context.Options.EnsureAllUsed(Name, isProtocol: false);
        return new CopyOnReadNode(context.NodeName, context.Flags, file);
    }
}
