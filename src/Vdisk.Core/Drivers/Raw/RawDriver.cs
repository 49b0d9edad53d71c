using Vdisk.Graph;
using Vdisk.Options;

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

    /// <summary>raw_measure: the input's size, or the size option in whole sectors; nothing else.</summary>
    public Task<MeasureResult> MeasureAsync(QemuOpts options, BlockNode? input, CancellationToken cancellationToken = default)
    {
        long size = input is not null ? input.Length : (long)(((options.GetNumber("size") ?? 0) + 511) / 512 * 512);
        return Task.FromResult(new MeasureResult(size, size, false));
    }
}
