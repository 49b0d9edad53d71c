using Vdisk.Drivers.File;
using Vdisk.Graph;
using Vdisk.Native;
using Vdisk.Options;

namespace Vdisk.Drivers.Raw;

/// <summary>Options of the <c>raw</c> format: file, offset, size.</summary>
public sealed class RawDriver : IBlockDriver
{
    /// <inheritdoc />
    public string Name => "raw";

    /// <inheritdoc />
    public bool IsProtocol => false;

    /// <summary>raw_create_opts: the size only (the file protocol's options follow it).</summary>
    private static readonly QemuOptDesc[] s_createOptions = [new("size", QemuOptType.Size, "Virtual disk size")];

    /// <inheritdoc />
    public IReadOnlyList<QemuOptDesc>? CreateOptionList => s_createOptions;

    /// <summary>
    /// raw_co_create_opts hands everything to the protocol: file-posix grows the file to the size
    /// in whole sectors with its preallocation mode while its create-time lock is held (an
    /// impossible size fails after the file was made, as in QEMU); an NBD export is used as it is.
    /// </summary>
    public async Task CreateAsync(CreateOptions options, CancellationToken cancellationToken = default)
    {
        ulong size = options.Size ?? throw new CreateException("Image creation needs a size parameter");
        var preallocation = options.Options.Get("preallocation") switch
        {
            null or "off" => Preallocation.Off,
            "metadata" => Preallocation.Metadata,
            "falloc" => Preallocation.Falloc,
            "full" => Preallocation.Full,
            var v => throw new CreateException($"invalid parameter value: {v}"),
        };
        try
        {
            await ImageCreator.CreateProtocolAsync(options, ImageCreator.SectorsForExisting(size), async (file, ct) =>
            {
                if (preallocation == Preallocation.Metadata) throw new CreateException("Unsupported preallocation mode: metadata");
                ulong rounded = (size + 511) & ~511UL;
                if (rounded < size || rounded > long.MaxValue) throw new CreateException("Could not resize file: Invalid argument");
                await FileCreate.GrowAsync(file, (long)rounded, preallocation, ct).ConfigureAwait(false);
            }, cancellationToken).ConfigureAwait(false);
        }
        catch (NativeIOException e) when (e.Errno == Errno.EFBIG)
        {
            throw new CreateException($"Could not resize file: {NativeIOException.Describe(e.Errno)}", tooLarge: true);
        }
    }

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
        return Task.FromResult(new MeasureResult(size, size, null));
    }
}
