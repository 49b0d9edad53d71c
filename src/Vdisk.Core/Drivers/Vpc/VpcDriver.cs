using Vdisk.Graph;
using Vdisk.Options;

namespace Vdisk.Drivers.Vpc;

/// <summary>
/// Options of the <c>vpc</c> format: the file child and QEMU's runtime option
/// <c>force_size_calc=chs|current_size</c>, which overrides how the virtual size is derived.
/// </summary>
public sealed class VpcDriver : IBlockDriver
{
    /// <inheritdoc />
    public string Name => "vpc";

    /// <inheritdoc />
    public bool IsProtocol => false;

    /// <summary>vpc_create_opts, in QEMU's order.</summary>
    private static readonly QemuOptDesc[] s_createOptions =
    [
        new("size", QemuOptType.Size, "Virtual disk size"),
        new("subformat", QemuOptType.String, "Type of virtual hard disk format. Supported formats are {dynamic (default) | fixed} "),
        new("force_size", QemuOptType.Bool, "Force disk size calculation to use the actual size specified, rather than using the nearest CHS-based calculation"),
    ];

    /// <inheritdoc />
    public IReadOnlyList<QemuOptDesc>? CreateOptionList => s_createOptions;

    /// <inheritdoc />
    public async Task CreateAsync(CreateOptions options, CancellationToken cancellationToken = default)
    {
        ulong size = options.Size ?? throw new CreateException("Image creation needs a size parameter");
        var o = new VpcCreateOptions(size, options.Options.Get("subformat"), options.Options.GetBool("force_size") ?? false);
        // As vpc_co_create_opts: the file is made first, the subformat and geometry checked after.
        await ImageCreator.CreateOnProtocolAsync(options, (file, ct) => VpcCreate.WriteAsync(file, o, ct), cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public BlockNode Open(NodeOpenContext context)
    {
        var file = context.OpenChild("file");
        string? sizeCalc = context.Options.TakeString("force_size_calc");
        bool chs = false, currentSize = false;
        switch (sizeCalc)
        {
            case null: break;
            case "chs": chs = true; break;
            case "current_size": currentSize = true; break;
            default: throw new OptionException($"Invalid size calculation mode: '{sizeCalc}'");
        }
        context.Options.EnsureAllUsed(Name, isProtocol: false);
        return VpcNode.OpenAsync(context.NodeName, context.Flags, file, chs, currentSize).GetAwaiter().GetResult();
    }

    /// <summary>The first sector of a VHD that QEMU probes as vpc: a footer copy at offset 0 (dynamic disks).</summary>
    public static bool Probe(ReadOnlySpan<byte> head) => VpcFooter.HasCookie(head);
}
