using System.Buffers.Binary;

namespace Vdisk.Server.Nbd;

/// <summary>
/// The answer to the legacy NBD_OPT_EXPORT_NAME, which has no reply header: size, transmission
/// flags, and 124 zero bytes unless the client negotiated NO_ZEROES.
/// </summary>
public static class NbdExportNameReply
{
    /// <summary>Builds the reply.</summary>
    public static byte[] Create(ulong size, NbdTransmissionFlags flags, bool noZeroes)
    {
        var message = new byte[10 + (noZeroes ? 0 : 124)];
        BinaryPrimitives.WriteUInt64BigEndian(message, size);
        BinaryPrimitives.WriteUInt16BigEndian(message.AsSpan(8), (ushort)flags);
        return message;
    }
}
