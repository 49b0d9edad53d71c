using System.Buffers.Binary;

namespace Vdisk.Server.Nbd;

/// <summary>
/// A simple reply: magic, error, cookie; a successful READ's data follows. Used for every reply
/// without structured replies, and (as QEMU does) for successes without payload with them.
/// </summary>
public static class NbdSimpleReply
{
    /// <summary>Size of a simple reply header.</summary>
    public const int HeaderLength = 16;

    /// <summary>Writes the header.</summary>
    public static void Write(Span<byte> destination, NbdError error, ulong cookie)
    {
        BinaryPrimitives.WriteUInt32BigEndian(destination, NbdMagic.SimpleReply);
        BinaryPrimitives.WriteUInt32BigEndian(destination[4..], (uint)error);
        BinaryPrimitives.WriteUInt64BigEndian(destination[8..], cookie);
    }
}
