namespace Vdisk.Graph;

/// <summary>
/// bdrv_co_do_pwrite_zeroes's split of a zero write: an unaligned head and an unaligned tail
/// apart from the aligned bulk, which goes in pieces of at most a whole number of alignment
/// units below <c>maxPiece</c>. Drivers try each piece as a zero write of their own and fall
/// back to writing zero buffers where they cannot.
/// </summary>
public static class ZeroWritePieces
{
    /// <summary>The pieces of [<paramref name="offset"/>, +<paramref name="length"/>), in order.</summary>
    public static IEnumerable<(long Offset, long Length)> Split(long offset, long length, long alignment, long maxPiece)
    {
        long head = offset % alignment;
        long tail = (offset + length) % alignment;
        while (length > 0)
        {
            long num = length;
            if (head != 0)
            {
                num = Math.Min(length, alignment - head);
                head = (head + num) % alignment;
            }
            else if (tail != 0 && num > alignment)
            {
                num -= tail;
            }
            num = Math.Min(num, maxPiece);
            yield return (offset, num);
            offset += num;
            length -= num;
        }
    }
}
