using Vdisk.Graph;
using Vdisk.Options;

namespace Vdisk.Drivers.Vdi;

/// <summary>Options of the <c>vdi</c> format: only the file child.</summary>
public sealed class VdiDriver : IBlockDriver
{
    /// <inheritdoc />
    public string Name => "vdi";

    /// <inheritdoc />
    public bool IsProtocol => false;

    /// <summary>vdi_create_opts, in QEMU's order.</summary>
    private static readonly QemuOptDesc[] s_createOptions =
    [
        new("size", QemuOptType.Size, "Virtual disk size"),
        new("static", QemuOptType.Bool, "VDI static (pre-allocated) image", "off"),
    ];

    /// <inheritdoc />
    public IReadOnlyList<QemuOptDesc>? CreateOptionList => s_createOptions;

    /// <inheritdoc />
    public Task CreateAsync(CreateOptions options, CancellationToken cancellationToken = default)
    {
        ulong size = options.Size ?? throw new CreateException("Image creation needs a size parameter");
        var o = new VdiCreateOptions(size, options.Options.GetBool("static") ?? false);
        return ImageCreator.CreateOnProtocolAsync(options, (file, ct) => VdiCreate.WriteAsync(file, o, ct), cancellationToken);
    }

    /// <inheritdoc />
    public BlockNode Open(NodeOpenContext context)
    {
        var file = context.OpenChild("file");
        context.Options.EnsureAllUsed(Name, isProtocol: false);
        return VdiNode.OpenAsync(context.NodeName, context.Flags, file).GetAwaiter().GetResult();
    }
}
