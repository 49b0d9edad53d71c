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
