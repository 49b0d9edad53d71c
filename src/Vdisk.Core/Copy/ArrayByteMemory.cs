using System.Buffers;
using System.Runtime.InteropServices;

namespace Vdisk.Copy;

/// <summary>
/// The bytes of an array of <typeparamref name="T"/> as <see cref="Memory{T}"/> of bytes, so that
/// a table of 64-bit entries is read straight into its array: no second buffer of the same size
/// to allocate, zero and fault in (.NET has no cast between <see cref="Memory{T}"/> types).
/// </summary>
public sealed unsafe class ArrayByteMemory<T> : MemoryManager<byte> where T : unmanaged
{
    private readonly T[] _array;

    /// <summary>Views <paramref name="array"/> as bytes.</summary>
    public ArrayByteMemory(T[] array) => _array = array;

    /// <inheritdoc />
    public override Span<byte> GetSpan() => MemoryMarshal.AsBytes(_array.AsSpan());

    /// <inheritdoc />
    public override MemoryHandle Pin(int elementIndex = 0)
    {
        var handle = GCHandle.Alloc(_array, GCHandleType.Pinned);
        return new MemoryHandle((byte*)handle.AddrOfPinnedObject() + elementIndex, handle);
    }

    /// <inheritdoc />
    public override void Unpin()
    {
    }

    /// <inheritdoc />
    protected override void Dispose(bool disposing)
    {
    }
}
