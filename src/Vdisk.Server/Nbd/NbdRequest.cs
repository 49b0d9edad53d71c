using System.Buffers.Binary;

namespace Vdisk.Server.Nbd;

/// <summary>
/// A transmission request: magic, flags, type, cookie (the client's handle, echoed in every
/// reply), offset and length. A WRITE's payload follows it on the wire.
/// </summary>
/// <param name="Flags">Command flags.</param>
/// <param name="Command">The command (unknown codes are kept as they are).</param>
/// <param name="Cookie">The client's handle for this request.</param>
/// <param name="Offset">Byte offset in the export.</param>
/// <param name="Length">Byte count.</param>
public readonly record struct NbdRequest(NbdCommandFlags Flags, NbdCommand Command, ulong Cookie, ulong Offset, uint Length)
{
    /// <summary>Size of a request header.</summary>
    public const int HeaderLength = 28;

    /// <summary>Parses a header; false when the magic is wrong (the stream is lost: disconnect).</summary>
    public static bool TryRead(ReadOnlySpan<byte> source, out NbdRequest request)
    {
        request = default;
        if (BinaryPrimitives.ReadUInt32BigEndian(source) != NbdMagic.Request) return false;
        request = new(
            (NbdCommandFlags)BinaryPrimitives.ReadUInt16BigEndian(source[4..]),
            (NbdCommand)BinaryPrimitives.ReadUInt16BigEndian(source[6..]),
            BinaryPrimitives.ReadUInt64BigEndian(source[8..]),
            BinaryPrimitives.ReadUInt64BigEndian(source[16..]),
            BinaryPrimitives.ReadUInt32BigEndian(source[24..]));
        return true;
    }

    /// <summary>Writes the header (used by tests and clients).</summary>
    public void Write(Span<byte> destination)
    {
        BinaryPrimitives.WriteUInt32BigEndian(destination, NbdMagic.Request);
        BinaryPrimitives.WriteUInt16BigEndian(destination[4..], (ushort)Flags);
        BinaryPrimitives.WriteUInt16BigEndian(destination[6..], (ushort)Command);
        BinaryPrimitives.WriteUInt64BigEndian(destination[8..], Cookie);
        BinaryPrimitives.WriteUInt64BigEndian(destination[16..], Offset);
        BinaryPrimitives.WriteUInt32BigEndian(destination[24..], Length);
    }

    /// <summary>QEMU's name for a command in messages (nbd_cmd_lookup).</summary>
    public static string Name(NbdCommand command) => command switch
    {
        NbdCommand.Read => "read",
        NbdCommand.Write => "write",
        NbdCommand.Disconnect => "disconnect",
        NbdCommand.Flush => "flush",
        NbdCommand.Trim => "trim",
        NbdCommand.Cache => "cache",
        NbdCommand.WriteZeroes => "write zeroes",
        NbdCommand.BlockStatus => "block status",
        NbdCommand.Resize => "resize",
        _ => "<unknown>",
    };
}
