using Vdisk.Graph;
using Vdisk.Native;
using Vdisk.Permissions;

namespace Vdisk.Drivers.Blkverify;

/// <summary>
/// A <c>blkverify</c> node: reads and writes go to both children at once and must give the same
/// result; a read must also give the same bytes. At the first difference the process prints
/// QEMU's line (<c>blkverify: read offset=O bytes=N contents mismatch at offset X</c>) and exits
/// with status 1, as blkverify_err does: it is a tool for finding a driver's bugs, and going on
/// with diverged data would hide them. Flushes go to the test image only; zero writes are written
/// as zeroes (blkverify has no zero write of its own); discards are dropped.
/// </summary>
public sealed class BlkverifyNode : BlockNode
{
    private readonly BdrvChild _raw;
    private readonly BdrvChild _test;

    internal BlkverifyNode(string nodeName, NodeFlags flags, BlockNode raw, BlockNode test)
        : base(nodeName, flags, test.Filename)
    {
        var edges = AttachChildren([("raw", raw, ChildRole.Filtered | ChildRole.Primary), ("test", test, ChildRole.Data)]);
        _raw = edges[0];
        _test = edges[1];
        // blkverify_refresh_filename
        Filename = $"blkverify:{raw.Filename}:{test.Filename}";
    }

    /// <inheritdoc />
    /// <remarks>Its children have no one directory: "Cannot generate a base directory for blkverify nodes".</remarks>
    protected override bool HasDirname => false;

    /// <inheritdoc />
    public override string DriverName => "blkverify";

    /// <inheritdoc />
    public override bool IsProtocol => true;

    /// <inheritdoc />
    public override IChildPermissionRule PermissionRule => DefaultChildPermissionRule.Instance;

    /// <summary>The raw reference copy.</summary>
    public BlockNode Raw => _raw.Node;

    /// <summary>The image under test.</summary>
    public BlockNode Test => _test.Node;

    /// <inheritdoc />
    public override BlockNode? FilteredNode => Raw;

    /// <inheritdoc />
    public override long Length => Test.Length;

    /// <inheritdoc />
    public override async ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        var reference = new byte[buffer.Length];
        int result = await BothAsync(false, offset, buffer.Length,
            () => Test.ReadAsync(offset, buffer, cancellationToken), () => Raw.ReadAsync(offset, reference, cancellationToken)).ConfigureAwait(false);
        // Compared whatever the result, as blkverify_co_preadv does.
        int differs = buffer.Span.CommonPrefixLength(reference);
        if (differs < buffer.Length) Mismatch(false, offset, buffer.Length, $"contents mismatch at offset {offset + differs}");
        ThrowIfFailed(result);
    }

    /// <inheritdoc />
    public override async ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default) =>
        ThrowIfFailed(await BothAsync(true, offset, data.Length,
            () => Test.WriteAsync(offset, data, flags, cancellationToken), () => Raw.WriteAsync(offset, data, flags, cancellationToken)).ConfigureAwait(false));

    /// <inheritdoc />
    public override ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags flags = ZeroFlags.None, CancellationToken cancellationToken = default) =>
        FormatIo.WriteZeroesByWritingAsync(this, offset, length, flags, cancellationToken);

    /// <inheritdoc />
    /// <remarks>Only the test image: the raw copy's durability does not matter.</remarks>
    public override ValueTask FlushAsync(CancellationToken cancellationToken = default) => Test.FlushAsync(cancellationToken);

    /// <inheritdoc />
    /// <remarks>No block status in blkverify: the block layer's default for filters (BDRV_BLOCK_RAW) asks the raw copy.</remarks>
    public override ValueTask<BlockStatus> GetBlockStatusAsync(long offset, long length, CancellationToken cancellationToken = default) =>
        Raw.GetBlockStatusAsync(offset, length, cancellationToken);

    /// <inheritdoc />
    /// <remarks>A protocol driver without its own answer: qemu-img info shows "disk size: unavailable".</remarks>
    public override long? AllocatedSize => null;

    /// <summary>blkverify_co_prwv: both requests in flight together; their results (0 or -errno) must agree. The test image's result is the request's.</summary>
    private async ValueTask<int> BothAsync(bool write, long offset, long bytes, Func<ValueTask> onTest, Func<ValueTask> onRaw)
    {
        var test = FormatIo.ResultOf(onTest);
        var raw = FormatIo.ResultOf(onRaw);
        int testResult = await test.ConfigureAwait(false);
        int rawResult = await raw.ConfigureAwait(false);
        if (testResult != rawResult) Mismatch(write, offset, bytes, $"return value mismatch {testResult} != {rawResult}");
        return testResult;
    }

    private void ThrowIfFailed(int result)
    {
        if (result != 0) throw new NativeIOException(-result, NativeIOException.Describe(-result), Filename);
    }

    private static void Mismatch(bool write, long offset, long bytes, string what) =>
        Diagnostics.Fatal($"blkverify: {(write ? "write" : "read")} offset={offset} bytes={bytes} {what}");
}
