using Vdisk.Drivers.Qcow2;
using Vdisk.Graph;
using Vdisk.Locking;
using Vdisk.Native;
using Vdisk.Options;
using Vdisk.Permissions;

namespace Vdisk.Drivers.Vmdk;

/// <summary>
/// Options of the <c>vmdk</c> format: <c>file</c> (the descriptor, or the monolithic file),
/// <c>extents.N</c> (options of extent file N, which is otherwise opened by the name the
/// descriptor gives) and <c>backing</c>. Without a <c>backing</c> option the parentFileNameHint
/// is opened read-only as a vmdk image, relative to the image's directory.
/// </summary>
public sealed class VmdkDriver : IBlockDriver
{
    /// <inheritdoc />
    public string Name => "vmdk";

    /// <inheritdoc />
    public bool IsProtocol => false;

    /// <inheritdoc />
    public bool SupportsCompressedWrites => true;

    /// <summary>vmdk_create_opts, in QEMU's order (the "Formatting" line prints them so).</summary>
    private static readonly QemuOptDesc[] s_createOptions =
    [
        new("size", QemuOptType.Size, "Virtual disk size"),
        new("adapter_type", QemuOptType.String, "Virtual adapter type, can be one of ide (default), lsilogic, buslogic or legacyESX"),
        new("backing_file", QemuOptType.String, "File name of a base image"),
        new("backing_fmt", QemuOptType.String, "Must be 'vmdk' if present"),
        new("compat6", QemuOptType.Bool, "VMDK version 6 image", "off"),
        new("hwversion", QemuOptType.String, "VMDK hardware version", "undefined"),
        new("toolsversion", QemuOptType.String, "VMware guest tools version"),
        new("subformat", QemuOptType.String, "VMDK flat extent format, can be one of {monolithicSparse (default) | monolithicFlat | twoGbMaxExtentSparse | twoGbMaxExtentFlat | streamOptimized} "),
        new("zeroed_grain", QemuOptType.Bool, "Enable efficient zero writes using the zeroed-grain GTE feature"),
    ];

    /// <inheritdoc />
    public IReadOnlyList<QemuOptDesc>? CreateOptionList => s_createOptions;

    /// <inheritdoc />
    public Task CreateAsync(CreateOptions options, CancellationToken cancellationToken = default)
    {
        var o = options.Options;
        ulong size = options.Size ?? throw new CreateException("Image creation needs a size parameter");
        return VmdkCreator.CreateAsync(new VmdkCreateOptions
        {
            Filename = options.Filename,
            Size = (long)Math.Min(size, long.MaxValue - 511),
            Subformat = o.Get("subformat"),
            AdapterType = o.Get("adapter_type"),
            BackingFile = options.BackingFile,
            BackingFormat = options.BackingFormat,
            HwVersion = o.Get("hwversion"),
            ToolsVersion = o.Get("toolsversion"),
            Compat6 = o.GetBool("compat6") ?? false,
            ZeroedGrain = o.GetBool("zeroed_grain") ?? false,
            Locking = options.Locking,
        }, cancellationToken);
    }

    /// <inheritdoc />
    public BlockNode Open(NodeOpenContext context)
    {
        var o = context.Options;
        bool hasBackingOption = o.Has("backing");
        var backingOption = o.Take("backing");
        var extentOptions = o.TakeDict("extents")?.Clone();
        var file = context.OpenChild("file");
        var node = VmdkNode.OpenAsync(context, file, extentOptions).GetAwaiter().GetResult();
        if (extentOptions is { Count: > 0 })
        {
            var (key, value) = extentOptions.Entries[0];
            string rest = value is OptionDict d ? "." + (d.Flatten().FirstOrDefault().Key ?? "") : "";
            throw new OptionException($"Block format 'vmdk' does not support the option 'extents.{key}{rest}'");
        }
        o.EnsureAllUsed(Name, isProtocol: false);
        if ((context.OpenFlags & OpenFlags.NoBacking) != 0) return node;
        OpenBacking(context, node, hasBackingOption, backingOption);
        return node;
    }

    private static void OpenBacking(NodeOpenContext context, VmdkNode node, bool hasBackingOption, OptionValue? backingOption) =>
        BackingFileOpen.Open(context, node, node.BackingFileHint, node.BackingFileHint is null ? null : "vmdk", hasBackingOption, backingOption, node.AttachBacking);

}
