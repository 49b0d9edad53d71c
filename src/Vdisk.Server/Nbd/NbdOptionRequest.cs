using System.Buffers.Binary;

namespace Vdisk.Server.Nbd;

/// <summary>
/// The header of an option the client sends during the handshake: IHAVEOPT, option, length,
/// then <see cref="Length"/> bytes of data.
/// </summary>
/// <param name="Option">The option code (unknown codes are kept as they are).</param>
/// <param name="Length">Bytes of option data that follow.</param>
public readonly record struct NbdOptionRequest(NbdOption Option, uint Length)
{
    /// <summary>Size of the header.</summary>
    public const int HeaderLength = 16;

    /// <summary>Parses a header; false when the magic is wrong (the client is not speaking NBD).</summary>
    public static bool TryRead(ReadOnlySpan<byte> source, out NbdOptionRequest request)
    {
        request = default;
        if (BinaryPrimitives.ReadUInt64BigEndian(source) != NbdMagic.Option) return false;
        request = new((NbdOption)BinaryPrimitives.ReadUInt32BigEndian(source[8..]), BinaryPrimitives.ReadUInt32BigEndian(source[12..]));
        return true;
    }

    /// <summary>Writes a header (used by tests and clients).</summary>
    public void Write(Span<byte> destination)
    {
        BinaryPrimitives.WriteUInt64BigEndian(destination, NbdMagic.Option);
        BinaryPrimitives.WriteUInt32BigEndian(destination[8..], (uint)Option);
        BinaryPrimitives.WriteUInt32BigEndian(destination[12..], Length);
    }

    /// <summary>QEMU's name for an option in messages (nbd_opt_lookup).</summary>
    public static string Name(NbdOption option) => option switch
    {
        NbdOption.ExportName => "export name",
        NbdOption.Abort => "abort",
        NbdOption.List => "list",
        NbdOption.PeekExport => "peek export",
        NbdOption.StartTls => "starttls",
        NbdOption.Info => "info",
        NbdOption.Go => "go",
        NbdOption.StructuredReply => "structured reply",
        NbdOption.ListMetaContext => "list meta context",
        NbdOption.SetMetaContext => "set meta context",
        NbdOption.ExtendedHeaders => "extended headers",
        _ => "<unknown>",
    };
}
