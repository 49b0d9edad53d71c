namespace Vdisk.Copy;

/// <summary>
/// Splits a buffer into alternating runs of all-zero and non-zero blocks (qemu-img convert's
/// sparse detection), looking at every block exactly once: the block that ends one run is
/// remembered as the first block of the next.
/// </summary>
public struct ZeroRunScanner
{
    private readonly int _block;
    private int _position;
    private int _pending; // classification of the block at _position: 0 unknown, 1 zero, 2 data

    /// <summary>A scanner over blocks of <paramref name="blockSize"/> bytes, counted from the buffer's start.</summary>
    public ZeroRunScanner(int blockSize)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(blockSize);
        _block = blockSize;
    }

    /// <summary>
    /// The next run of <paramref name="data"/> (the same buffer on every call): false when the
    /// buffer is exhausted. A final short block counts as a whole one.
    /// </summary>
    public bool Next(ReadOnlySpan<byte> data, out int start, out int length, out bool zero)
    {
        start = _position;
        if (_position >= data.Length)
        {
            length = 0;
            zero = false;
            return false;
        }
        zero = _pending == 0 ? IsZeroBlock(data, _position) : _pending == 1;
        int end = Math.Min(data.Length, _position + _block);
        _pending = 0;
        while (end < data.Length)
        {
            bool next = IsZeroBlock(data, end);
            if (next != zero)
            {
                _pending = next ? 1 : 2;
                break;
            }
            end = Math.Min(data.Length, end + _block);
        }
        length = end - start;
        _position = end;
        return true;
    }

    private readonly bool IsZeroBlock(ReadOnlySpan<byte> data, int at) =>
        !data.Slice(at, Math.Min(_block, data.Length - at)).ContainsAnyExcept((byte)0);
}
