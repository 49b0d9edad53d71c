using System.Buffers;
using System.Runtime.InteropServices;

namespace Vdisk.Copy;

/// <summary>
/// A page-aligned buffer outside the GC heap, for long-lived I/O buffers: allocated once and
/// reused, so large copies neither churn the large-object heap nor fault in fresh pages per
/// request, and the alignment suits O_DIRECT.
/// </summary>
public sealed unsafe class NativeBuffer : MemoryManager<byte>
{
    private byte* _pointer;
    private readonly int _length;

    /// <summary>Allocates <paramref name="length"/> bytes aligned to <paramref name="alignment"/> (contents undefined).</summary>
    public NativeBuffer(int length, int alignment = 4096)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        _length = length;
        _pointer = (byte*)NativeMemory.AlignedAlloc((nuint)Math.Max(length, 1), (nuint)alignment);
    }

    /// <inheritdoc />
    public override Span<byte> GetSpan()
    {
        ObjectDisposedException.ThrowIf(_pointer == null, this);
        return new Span<byte>(_pointer, _length);
    }

    /// <inheritdoc />
    public override MemoryHandle Pin(int elementIndex = 0)
    {
        ObjectDisposedException.ThrowIf(_pointer == null, this);
        return new MemoryHandle(_pointer + elementIndex);
    }

    /// <inheritdoc />
    public override void Unpin()
    {
    }

    /// <inheritdoc />
    protected override void Dispose(bool disposing)
    {
        if (_pointer == null) return;
        NativeMemory.AlignedFree(_pointer);
        _pointer = null;
    }
}
