using System.Buffers.Binary;
using System.Text;

namespace Vdisk.Server.Nbd;

/// <summary>
/// The data of NBD_OPT_INFO and NBD_OPT_GO: the export name and the information types the
/// client asks for (u32 name length, name, u16 count, count × u16).
/// </summary>
/// <param name="ExportName">The export asked for ("" is the default export).</param>
/// <param name="Requested">The information types requested.</param>
public sealed record NbdInfoRequest(string ExportName, IReadOnlyList<NbdInfoType> Requested)
{
    /// <summary>Parses the data; on failure <paramref name="error"/> is the message for NBD_REP_ERR_INVALID.</summary>
    public static bool TryParse(NbdOption option, ReadOnlySpan<byte> data, out NbdInfoRequest? request, out string? error)
    {
        request = null;
        error = $"Inconsistent lengths in option {NbdOptionRequest.Name(option)}";
        if (data.Length < 4) return false;
        uint nameLength = BinaryPrimitives.ReadUInt32BigEndian(data);
        if (nameLength > NbdLimits.MaxString)
        {
            error = "export name too long";
            return false;
        }
        if (data.Length < 4 + nameLength + 2) return false;
        var nameBytes = data.Slice(4, (int)nameLength);
        int count = BinaryPrimitives.ReadUInt16BigEndian(data[(4 + (int)nameLength)..]);
        var rest = data[(6 + (int)nameLength)..];
        if (rest.Length != count * 2) return false;
        if (!TryDecodeName(nameBytes, out string name, out error)) return false;
        var requested = new NbdInfoType[count];
        for (int i = 0; i < count; i++) requested[i] = (NbdInfoType)BinaryPrimitives.ReadUInt16BigEndian(rest[(i * 2)..]);
        request = new NbdInfoRequest(name, requested);
        error = null;
        return true;
    }

    /// <summary>Writes the data (used by tests and clients).</summary>
    public byte[] ToBytes()
    {
        var name = Encoding.UTF8.GetBytes(ExportName);
        var data = new byte[4 + name.Length + 2 + 2 * Requested.Count];
        BinaryPrimitives.WriteUInt32BigEndian(data, (uint)name.Length);
        name.CopyTo(data, 4);
        BinaryPrimitives.WriteUInt16BigEndian(data.AsSpan(4 + name.Length), (ushort)Requested.Count);
        for (int i = 0; i < Requested.Count; i++)
            BinaryPrimitives.WriteUInt16BigEndian(data.AsSpan(6 + name.Length + 2 * i), (ushort)Requested[i]);
        return data;
    }

    /// <summary>Strings on the wire are UTF-8 without NUL; anything else is refused.</summary>
    internal static bool TryDecodeName(ReadOnlySpan<byte> bytes, out string text, out string? error)
    {
        text = "";
        error = null;
        if (bytes.Contains((byte)0))
        {
            error = "string contains NUL";
            return false;
        }
        try
        {
            text = new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(bytes);
            return true;
        }
        catch (DecoderFallbackException)
        {
            error = "string is not valid UTF-8";
            return false;
        }
    }
}
