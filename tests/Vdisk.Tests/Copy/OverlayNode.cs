using Vdisk.Graph;
using Vdisk.Permissions;

namespace Vdisk.Tests.Copy;

/// <summary>
/// An in-memory format node like a qcow2 overlay: sectors it never wrote are unallocated (block
/// status says neither data nor zero) and read through its optional backing node.
/// </summary>
internal sealed class OverlayNode : BlockNode
{
    private readonly MemoryNode _data;
    private readonly bool[] _written;

    public OverlayNode(string name, long length, BlockNode? backing = null) : base(name, NodeFlags.ReadWrite, name)
    {
        _data = new MemoryNode(name + "-data", length);
        _written = new bool[(length + 511) / 512];
        if (backing is not null) AttachChild("backing", backing, ChildRole.Cow);
    }

    public override string DriverName => "overlay";
    public override bool IsProtocol => false;
    public override IChildPermissionRule PermissionRule => DefaultChildPermissionRule.Instance;
    public override long Length => _data.Length;

    /// <summary>Writes data into the overlay itself.</summary>
    public void Fill(long offset, ReadOnlySpan<byte> data)
    {
        _data.Fill(offset, data);
        for (long s = offset / 512; s < (offset + data.Length + 511) / 512; s++) _written[s] = true;
    }

    public override async ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        for (int done = 0; done < buffer.Length; done += 512)
        {
            long pos = offset + done;
            var piece = buffer.Slice(done, Math.Min(512, buffer.Length - done));
            var backing = BlockChain.BackingOf(this);
            if (_written[pos / 512]) await _data.ReadAsync(pos, piece, cancellationToken);
            else if (backing is not null && pos < backing.Length) await backing.ReadAsync(pos, piece, cancellationToken);
            else piece.Span.Clear();
        }
    }

    public override ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default)
    {
        Fill(offset, data.Span);
        return ValueTask.CompletedTask;
    }

    public override ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags flags = ZeroFlags.None, CancellationToken cancellationToken = default)
    {
        Fill(offset, new byte[length]);
        return ValueTask.CompletedTask;
    }

    public override ValueTask DiscardAsync(long offset, long length, CancellationToken cancellationToken = default) =>
        WriteZeroesAsync(offset, length, ZeroFlags.MayUnmap, cancellationToken);

    public override ValueTask FlushAsync(CancellationToken cancellationToken = default) => ValueTask.CompletedTask;

    public override ValueTask<BlockStatus> GetBlockStatusAsync(long offset, long length, CancellationToken cancellationToken = default)
    {
        long sector = offset / 512;
        bool written = _written[sector];
        long end = sector + 1;
        long last = (Math.Min(offset + length, Length) + 511) / 512;
        while (end < last && _written[end] == written) end++;
        long run = Math.Min(end * 512, offset + length) - offset;
        return ValueTask.FromResult(new BlockStatus(run, written ? BlockStatusFlags.Data | BlockStatusFlags.Allocated : BlockStatusFlags.None));
    }
}
