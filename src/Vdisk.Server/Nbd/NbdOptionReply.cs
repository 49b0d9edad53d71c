using System.Buffers.Binary;
using System.Text;

namespace Vdisk.Server.Nbd;

/// <summary>
/// A reply to an option: magic, the option it answers, reply type, length, data. Replies are
/// built whole (the handshake is not a hot path); the factory methods give each reply type its
/// payload layout.
/// </summary>
public static class NbdOptionReply
{
    /// <summary>Size of the header.</summary>
    public const int HeaderLength = 20;

    /// <summary>A reply with <paramref name="payload"/>.</summary>
    public static byte[] Create(NbdOption option, NbdOptionReplyType type, ReadOnlySpan<byte> payload)
    {
        var message = new byte[HeaderLength + payload.Length];
        BinaryPrimitives.WriteUInt64BigEndian(message, NbdMagic.OptionReply);
        BinaryPrimitives.WriteUInt32BigEndian(message.AsSpan(8), (uint)option);
        BinaryPrimitives.WriteUInt32BigEndian(message.AsSpan(12), (uint)type);
        BinaryPrimitives.WriteUInt32BigEndian(message.AsSpan(16), (uint)payload.Length);
        payload.CopyTo(message.AsSpan(HeaderLength));
        return message;
    }

    /// <summary>NBD_REP_ACK.</summary>
    public static byte[] Ack(NbdOption option) => Create(option, NbdOptionReplyType.Ack, default);

    /// <summary>An error reply with a message for humans.</summary>
    public static byte[] Error(NbdOption option, NbdOptionReplyType type, string message) =>
        Create(option, type, Encoding.UTF8.GetBytes(message));

    /// <summary>NBD_REP_SERVER: name length, name, then the description as free text.</summary>
    public static byte[] Server(string name, string? description)
    {
        var nameBytes = Encoding.UTF8.GetBytes(name);
        var descriptionBytes = Encoding.UTF8.GetBytes(description ?? "");
        var payload = new byte[4 + nameBytes.Length + descriptionBytes.Length];
        BinaryPrimitives.WriteUInt32BigEndian(payload, (uint)nameBytes.Length);
        nameBytes.CopyTo(payload, 4);
        descriptionBytes.CopyTo(payload, 4 + nameBytes.Length);
        return Create(NbdOption.List, NbdOptionReplyType.Server, payload);
    }

    /// <summary>NBD_INFO_EXPORT: size and transmission flags.</summary>
    public static byte[] InfoExport(NbdOption option, ulong size, NbdTransmissionFlags flags)
    {
        Span<byte> payload = stackalloc byte[12];
        BinaryPrimitives.WriteUInt16BigEndian(payload, (ushort)NbdInfoType.Export);
        BinaryPrimitives.WriteUInt64BigEndian(payload[2..], size);
        BinaryPrimitives.WriteUInt16BigEndian(payload[10..], (ushort)flags);
        return Create(option, NbdOptionReplyType.Info, payload);
    }

    /// <summary>NBD_INFO_NAME or NBD_INFO_DESCRIPTION: a type and a string.</summary>
    public static byte[] InfoText(NbdOption option, NbdInfoType type, string text)
    {
        var bytes = Encoding.UTF8.GetBytes(text);
        var payload = new byte[2 + bytes.Length];
        BinaryPrimitives.WriteUInt16BigEndian(payload, (ushort)type);
        bytes.CopyTo(payload, 2);
        return Create(option, NbdOptionReplyType.Info, payload);
    }

    /// <summary>NBD_INFO_BLOCK_SIZE: minimum, preferred, maximum.</summary>
    public static byte[] InfoBlockSize(NbdOption option, uint minimum, uint preferred, uint maximum)
    {
        Span<byte> payload = stackalloc byte[14];
        BinaryPrimitives.WriteUInt16BigEndian(payload, (ushort)NbdInfoType.BlockSize);
        BinaryPrimitives.WriteUInt32BigEndian(payload[2..], minimum);
        BinaryPrimitives.WriteUInt32BigEndian(payload[6..], preferred);
        BinaryPrimitives.WriteUInt32BigEndian(payload[10..], maximum);
        return Create(option, NbdOptionReplyType.Info, payload);
    }

    /// <summary>NBD_REP_META_CONTEXT: the context id and name.</summary>
    public static byte[] MetaContext(NbdOption option, uint id, string name)
    {
        var bytes = Encoding.UTF8.GetBytes(name);
        var payload = new byte[4 + bytes.Length];
        BinaryPrimitives.WriteUInt32BigEndian(payload, id);
        bytes.CopyTo(payload, 4);
        return Create(option, NbdOptionReplyType.MetaContext, payload);
    }
}
