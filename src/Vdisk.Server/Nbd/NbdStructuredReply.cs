using System.Buffers.Binary;
using System.Text;

namespace Vdisk.Server.Nbd;

/// <summary>
/// A structured reply chunk: magic, flags (DONE on the last chunk), type, cookie, payload
/// length, payload. The writers put headers into caller-provided space, so that a READ's
/// header and data go out in one send from one pooled buffer.
/// </summary>
public static class NbdStructuredReply
{
    /// <summary>Size of a chunk header.</summary>
    public const int HeaderLength = 20;

    /// <summary>Chunk flag: this is the last chunk of the reply.</summary>
    public const ushort FlagDone = 1;

    /// <summary>Header plus the offset of an OFFSET_DATA chunk: what precedes the data.</summary>
    public const int DataPrefixLength = HeaderLength + 8;

    /// <summary>Size of a whole OFFSET_HOLE chunk.</summary>
    public const int HoleLength = HeaderLength + 12;

    /// <summary>Writes a chunk header.</summary>
    public static void WriteHeader(Span<byte> destination, bool done, NbdChunkType type, ulong cookie, uint payloadLength)
    {
        BinaryPrimitives.WriteUInt32BigEndian(destination, NbdMagic.StructuredReply);
        BinaryPrimitives.WriteUInt16BigEndian(destination[4..], done ? FlagDone : (ushort)0);
        BinaryPrimitives.WriteUInt16BigEndian(destination[6..], (ushort)type);
        BinaryPrimitives.WriteUInt64BigEndian(destination[8..], cookie);
        BinaryPrimitives.WriteUInt32BigEndian(destination[16..], payloadLength);
    }

    /// <summary>The header and offset of an OFFSET_DATA chunk carrying <paramref name="dataLength"/> bytes.</summary>
    public static void WriteDataPrefix(Span<byte> destination, bool done, ulong cookie, ulong offset, int dataLength)
    {
        WriteHeader(destination, done, NbdChunkType.OffsetData, cookie, (uint)(8 + dataLength));
        BinaryPrimitives.WriteUInt64BigEndian(destination[HeaderLength..], offset);
    }

    /// <summary>An OFFSET_HOLE chunk: <paramref name="length"/> bytes at <paramref name="offset"/> read as zeroes.</summary>
    public static void WriteHole(Span<byte> destination, bool done, ulong cookie, ulong offset, uint length)
    {
        WriteHeader(destination, done, NbdChunkType.OffsetHole, cookie, 12);
        BinaryPrimitives.WriteUInt64BigEndian(destination[HeaderLength..], offset);
        BinaryPrimitives.WriteUInt32BigEndian(destination[(HeaderLength + 8)..], length);
    }

    /// <summary>A NONE chunk (always DONE): a successful reply without payload.</summary>
    public static void WriteNone(Span<byte> destination, ulong cookie) =>
        WriteHeader(destination, true, NbdChunkType.None, cookie, 0);

    /// <summary>Size of a BLOCK_STATUS chunk with <paramref name="extentCount"/> extents.</summary>
    public static int BlockStatusLength(int extentCount) => HeaderLength + 4 + 8 * extentCount;

    /// <summary>A BLOCK_STATUS chunk: the context id, then (length, flags) per extent.</summary>
    public static void WriteBlockStatus(Span<byte> destination, bool done, ulong cookie, uint contextId, ReadOnlySpan<NbdExtent> extents)
    {
        WriteHeader(destination, done, NbdChunkType.BlockStatus, cookie, (uint)(4 + 8 * extents.Length));
        BinaryPrimitives.WriteUInt32BigEndian(destination[HeaderLength..], contextId);
        var at = destination[(HeaderLength + 4)..];
        foreach (var e in extents)
        {
            BinaryPrimitives.WriteUInt32BigEndian(at, e.Length);
            BinaryPrimitives.WriteUInt32BigEndian(at[4..], e.Flags);
            at = at[8..];
        }
    }

    /// <summary>An ERROR chunk (always DONE here): error number and a message for humans.</summary>
    public static byte[] Error(ulong cookie, NbdError error, string message)
    {
        var text = Encoding.UTF8.GetBytes(message);
        if (text.Length > NbdLimits.MaxString) text = text[..NbdLimits.MaxString];
        var chunk = new byte[HeaderLength + 6 + text.Length];
        WriteHeader(chunk, true, NbdChunkType.Error, cookie, (uint)(6 + text.Length));
        BinaryPrimitives.WriteUInt32BigEndian(chunk.AsSpan(HeaderLength), (uint)error);
        BinaryPrimitives.WriteUInt16BigEndian(chunk.AsSpan(HeaderLength + 4), (ushort)text.Length);
        text.CopyTo(chunk, HeaderLength + 6);
        return chunk;
    }
}

/// <summary>Flags of a <c>base:allocation</c> extent.</summary>
[Flags]
public enum NbdAllocationFlags : uint
{
    /// <summary>Allocated data.</summary>
    Data = 0,
    /// <summary>Not allocated (writes may need space).</summary>
    Hole = 1,
    /// <summary>Reads as zeroes.</summary>
    Zero = 2,
}

/// <summary>One extent of a BLOCK_STATUS reply.</summary>
/// <param name="Length">Bytes covered.</param>
/// <param name="Flags">The context's value: <see cref="NbdAllocationFlags"/> for base:allocation, the depth for qemu:allocation-depth.</param>
public readonly record struct NbdExtent(uint Length, uint Flags);
