using Vdisk.Graph;
using Vdisk.Native;
using Vdisk.Permissions;

namespace Vdisk.Drivers.Raw;

/// <summary>
/// The <c>raw</c> format: the guest sees the file's bytes, optionally through an
/// <c>offset</c>/<c>size</c> window. Passes its users' permissions straight to the file node.
/// </summary>
public sealed class RawNode : BlockNode
{
    private readonly BdrvChild _file;
    private long _offset;
    private long? _size;

    private RawNode(string nodeName, NodeFlags flags, BlockNode file, long offset, long? size)
        : base(nodeName, flags, file.Filename)
    {
        _offset = offset;
        _size = size;
        _file = AttachChild("file", file, RawChildPermissionRule.FileRole(HasWindow));
    }

    /// <summary>Opens a raw node over <paramref name="file"/>, checking the window like raw_apply_options.</summary>
    public static RawNode Open(string nodeName, NodeFlags flags, BlockNode file, ulong? offset, ulong? size)
    {
        var (off, len) = CheckWindow(file, offset, size);
        return new RawNode(nodeName, flags, file, off, len);
    }

    private (long Offset, long? Size)? _reopenWindow;

    /// <summary>
    /// raw_reopen_prepare: a new <c>offset</c>/<c>size</c> (one not given keeps its value),
    /// checked as at open. The file child's role stays the one the node was opened with.
    /// </summary>
    protected internal override string? PrepareReopen(IReadOnlyDictionary<string, string?> options)
    {
        ulong? offset = (ulong)_offset, size = _size is { } current ? (ulong)current : null;
        foreach (var (key, value) in options)
        {
            if (key is not ("offset" or "size")) return $"Cannot change the option '{key}'";
            if (Options.SizeParser.Parse(value ?? "", out ulong number) != Options.SizeParseStatus.Ok)
                return $"Parameter '{key}' expects a non-negative number below 2^64\n" +
                    "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n" +
                    "and exabytes, respectively.";
            if (key == "offset") offset = number; else size = number;
        }
        try
        {
            _reopenWindow = CheckWindow(File, offset, size);
        }
        catch (NativeIOException e)
        {
            return e.Message;
        }
        return null;
    }

    /// <inheritdoc />
    protected internal override void CommitReopen()
    {
        if (_reopenWindow is { } window) (_offset, _size) = window;
        _reopenWindow = null;
    }

    /// <inheritdoc />
    protected internal override void AbortReopen() => _reopenWindow = null;

    private static (long Offset, long? Size) CheckWindow(BlockNode file, ulong? offset, ulong? size)
    {
        long fileLength = file.Length;
        long off = (long)(offset ?? 0);
        if (offset is not null && (offset.Value > long.MaxValue || off > fileLength))
            throw new NativeIOException(Errno.EINVAL,
                $"Offset ({offset}) cannot be greater than size of the containing file ({fileLength})");
        if (size is not null && (size.Value > long.MaxValue || off + (long)size.Value > fileLength || off + (long)size.Value < off))
            throw new NativeIOException(Errno.EINVAL,
                $"The sum of offset ({off}) and size ({size}) has to be smaller or equal to the  actual size of the containing file ({fileLength})");
        return (off, size is null ? null : (long)size.Value);
    }

    /// <inheritdoc />
    public override string DriverName => "raw";

    /// <inheritdoc />
    public override bool IsProtocol => false;

    /// <summary>True when an offset or size option narrows the file.</summary>
    public bool HasWindow => _offset != 0 || _size is not null;

    /// <summary>
    /// True when the format was probed rather than given: writes that would make the first
    /// sector look like another format are refused, as QEMU does.
    /// </summary>
    public bool ProbedFormat { get; internal set; }

    /// <inheritdoc />
    public override bool IsProbedRaw => ProbedFormat;

    /// <summary>The window's start in the file.</summary>
    public long Offset => _offset;

    /// <inheritdoc />
    public override IChildPermissionRule PermissionRule => RawChildPermissionRule.Instance;

    /// <summary>The node the bytes live in.</summary>
    public BlockNode File => _file.Node;

    /// <inheritdoc />
    public override bool HasZeroInit => File.HasZeroInit;

    /// <summary>raw answers block status from its file (BDRV_BLOCK_RAW), so the file decides.</summary>
    public override bool UnallocatedReadsAsZeroes => File.UnallocatedReadsAsZeroes;

    /// <inheritdoc />
    public override long Length => _size ?? Math.Max(0, File.Length - _offset);

    /// <inheritdoc />
    public override async ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        // raw_co_preadv tells a blkdebug file below about the read.
        await File.DebugEventAsync(BlkdebugEvent.ReadAio).ConfigureAwait(false);
        await File.ReadAsync(_offset + offset, buffer, cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public override async ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default)
    {
        if (ProbedFormat && offset < 512 && data.Length > 0)
        {
            var head = new byte[512];
            await File.ReadAsync(_offset, head, cancellationToken).ConfigureAwait(false);
            int n = (int)Math.Min(data.Length, 512 - offset);
            data.Span[..n].CopyTo(head.AsSpan((int)offset));
            if (GraphOpener.LooksLikeOtherFormat(head))
                throw new NativeIOException(Errno.EPERM, "Operation not permitted", Filename);
        }
        await File.DebugEventAsync(BlkdebugEvent.WriteAio).ConfigureAwait(false);
        await File.WriteAsync(_offset + offset, data, flags, cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public override ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags flags = ZeroFlags.None, CancellationToken cancellationToken = default) =>
        File.WriteZeroesAsync(_offset + offset, length, flags, cancellationToken);

    /// <inheritdoc />
    public override ValueTask DiscardAsync(long offset, long length, CancellationToken cancellationToken = default) =>
        File.DiscardAsync(_offset + offset, length, cancellationToken);

    /// <inheritdoc />
    public override ValueTask TruncateAsync(long length, CancellationToken cancellationToken = default)
    {
        if (HasWindow)
            throw new NativeIOException(Errno.ENOTSUP, "The raw format with offset or size cannot be resized");
        return File.TruncateAsync(length, cancellationToken);
    }

    /// <inheritdoc />
    public override ValueTask TruncateAsync(long length, Preallocation preallocation, CancellationToken cancellationToken = default)
    {
        if (HasWindow)
            throw new NativeIOException(Errno.ENOTSUP, "The raw format with offset or size cannot be resized");
        return File.TruncateAsync(length, preallocation, cancellationToken);
    }

    /// <inheritdoc />
    public override ValueTask FlushAsync(CancellationToken cancellationToken = default) => File.FlushAsync(cancellationToken);

    /// <inheritdoc />
    public override async ValueTask<BlockStatus> GetBlockStatusAsync(long offset, long length, CancellationToken cancellationToken = default)
    {
        var status = await File.GetBlockStatusAsync(_offset + offset, length, cancellationToken).ConfigureAwait(false);
        return status with { Length = Math.Min(status.Length, length) };
    }
}
