using System.Buffers.Binary;

namespace Vdisk.Server.Nbd;

/// <summary>
/// The first exchange: the server sends NBDMAGIC, IHAVEOPT and its handshake flags; the client
/// answers with its 32-bit flags. A server must drop clients that send flags it does not know.
/// </summary>
public static class NbdGreeting
{
    /// <summary>Bytes the server sends.</summary>
    public const int Length = 18;

    /// <summary>Bytes the client answers with.</summary>
    public const int ClientFlagsLength = 4;

    /// <summary>What this server offers: fixed newstyle and no zeroes, as qemu-nbd (0x0003).</summary>
    public const NbdHandshakeFlags ServerFlags = NbdHandshakeFlags.FixedNewstyle | NbdHandshakeFlags.NoZeroes;

    /// <summary>Writes the greeting.</summary>
    public static void Write(Span<byte> destination)
    {
        BinaryPrimitives.WriteUInt64BigEndian(destination, NbdMagic.Init);
        BinaryPrimitives.WriteUInt64BigEndian(destination[8..], NbdMagic.Option);
        BinaryPrimitives.WriteUInt16BigEndian(destination[16..], (ushort)ServerFlags);
    }

    /// <summary>
    /// Reads the client's flags; false when they contain bits the server did not offer
    /// (the connection must then be dropped).
    /// </summary>
    public static bool TryReadClientFlags(ReadOnlySpan<byte> source, out NbdHandshakeFlags flags)
    {
        uint raw = BinaryPrimitives.ReadUInt32BigEndian(source);
        flags = (NbdHandshakeFlags)(raw & 0xffff);
        return (raw & ~(uint)ServerFlags) == 0;
    }
}
