using Vdisk.Graph;
using Vdisk.Options;
using Vdisk.Permissions;

namespace Vdisk.Drivers.Vhdx;

/// <summary>Options of the <c>vhdx</c> format: only the file child.</summary>
public sealed class VhdxDriver : IBlockDriver
{
    /// <inheritdoc />
    public string Name => "vhdx";

    /// <inheritdoc />
    public bool IsProtocol => false;

    /// <summary>vhdx_create_opts, in QEMU's order.</summary>
    private static readonly QemuOptDesc[] s_createOptions =
    [
        new("size", QemuOptType.Size, "Virtual disk size; max of 64TB."),
        new("log_size", QemuOptType.Size, "Log size; min 1MB.", "1048576"),
        new("block_size", QemuOptType.Size, "Block Size; min 1MB, max 256MB. 0 means auto-calculate based on image size.", "0"),
        new("subformat", QemuOptType.String, "VHDX format type, can be either 'dynamic' or 'fixed'. Default is 'dynamic'."),
        new("block_state_zero", QemuOptType.Bool,
            "Force use of payload blocks of type 'ZERO'. Non-standard, but default.  Do not set to 'off' when using 'qemu-img convert' with subformat=dynamic."),
    ];

    /// <inheritdoc />
    public IReadOnlyList<QemuOptDesc>? CreateOptionList => s_createOptions;

    /// <inheritdoc />
    public Task CreateAsync(CreateOptions options, CancellationToken cancellationToken = default)
    {
        ulong size = options.Size ?? throw new CreateException("Image creation needs a size parameter");
        var o = new VhdxCreateOptions(size, options.Options.GetNumber("log_size"), options.Options.GetNumber("block_size"),
            options.Options.Get("subformat"), options.Options.GetBool("block_state_zero"));
        // As vhdx_co_create_opts: the file is made first, the options checked after.
        return ImageCreator.CreateOnProtocolAsync(options, (file, ct) => VhdxCreate.WriteAsync(file, o, ct), cancellationToken);
    }

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
