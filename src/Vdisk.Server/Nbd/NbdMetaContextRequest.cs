using System.Buffers.Binary;
using System.Text;

namespace Vdisk.Server.Nbd;

/// <summary>
/// The data of NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT: the export name and the
/// queries (u32 name length, name, u32 count, then count × (u32 length, query)).
/// </summary>
/// <param name="ExportName">The export the contexts are for.</param>
/// <param name="Queries">The queries ("base:allocation", "base:", "qemu:allocation-depth"...).</param>
public sealed record NbdMetaContextRequest(string ExportName, IReadOnlyList<string> Queries)
{
    /// <summary>Parses the data; on failure <paramref name="error"/> is the message for NBD_REP_ERR_INVALID.</summary>
    public static bool TryParse(NbdOption option, ReadOnlySpan<byte> data, out NbdMetaContextRequest? request, out string? error)
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
        if (data.Length < 8 + nameLength) return false;
        if (!NbdInfoRequest.TryDecodeName(data.Slice(4, (int)nameLength), out string name, out error)) return false;
        uint count = BinaryPrimitives.ReadUInt32BigEndian(data[(4 + (int)nameLength)..]);
        var rest = data[(8 + (int)nameLength)..];
        var queries = new List<string>();
        for (uint i = 0; i < count; i++)
        {
            error = $"Inconsistent lengths in option {NbdOptionRequest.Name(option)}";
            if (rest.Length < 4) return false;
            uint length = BinaryPrimitives.ReadUInt32BigEndian(rest);
            if (length > NbdLimits.MaxString)
            {
                error = "query too long";
                return false;
            }
            if (rest.Length < 4 + length) return false;
            if (!NbdInfoRequest.TryDecodeName(rest.Slice(4, (int)length), out string query, out error)) return false;
            queries.Add(query);
            rest = rest[(4 + (int)length)..];
        }
        if (rest.Length != 0)
        {
            error = $"Inconsistent lengths in option {NbdOptionRequest.Name(option)}";
            return false;
        }
        request = new NbdMetaContextRequest(name, queries);
        error = null;
        return true;
    }

    /// <summary>
    /// The contexts of an export that the queries select, in QEMU's order with QEMU's ids
    /// (nbd_negotiate_meta_queries): base:allocation, then qemu:allocation-depth when the export
    /// offers it. LIST with no query selects every context and takes namespace wildcards
    /// ("base:", "qemu:"); SET needs exact names. Unknown namespaces and names are ignored, as the
    /// protocol requires.
    /// </summary>
    public IReadOnlyList<(uint Id, string Name)> Select(bool listing, bool allocationDepth, IReadOnlyList<string>? bitmaps = null)
    {
        bitmaps ??= [];
        bool baseAllocation = listing && Queries.Count == 0;
        bool depth = baseAllocation && allocationDepth;
        var bitmapChosen = new bool[bitmaps.Count];
        if (baseAllocation) Array.Fill(bitmapChosen, true);
        foreach (var query in Queries)
        {
            if (query == NbdLimits.BaseAllocation || (listing && query == "base:")) baseAllocation = true;
            else if (allocationDepth && (query == NbdLimits.AllocationDepth || (listing && query == "qemu:"))) depth = true;
            // nbd_meta_qemu_query: "qemu:" and "qemu:dirty-bitmap:" list every exported bitmap.
            if (listing && query is "qemu:" or NbdLimits.DirtyBitmapPrefix) Array.Fill(bitmapChosen, true);
            else if (query.StartsWith(NbdLimits.DirtyBitmapPrefix, StringComparison.Ordinal))
            {
                int i = IndexOf(bitmaps, query[NbdLimits.DirtyBitmapPrefix.Length..]);
                if (i >= 0) bitmapChosen[i] = true;
            }
        }
        var selected = new List<(uint, string)>(2);
        if (baseAllocation) selected.Add((NbdLimits.BaseAllocationId, NbdLimits.BaseAllocation));
        if (depth) selected.Add((NbdLimits.AllocationDepthId, NbdLimits.AllocationDepth));
        for (int i = 0; i < bitmaps.Count; i++)
            if (bitmapChosen[i]) selected.Add((NbdLimits.DirtyBitmapId + (uint)i, NbdLimits.DirtyBitmapPrefix + bitmaps[i]));
        return selected;
    }

    private static int IndexOf(IReadOnlyList<string> names, string name)
    {
        for (int i = 0; i < names.Count; i++)
            if (names[i] == name) return i;
        return -1;
    }

    /// <summary>Writes the data (used by tests and clients).</summary>
    public byte[] ToBytes()
    {
        var name = Encoding.UTF8.GetBytes(ExportName);
        var parts = Queries.Select(q => Encoding.UTF8.GetBytes(q)).ToArray();
        var data = new byte[8 + name.Length + parts.Sum(p => 4 + p.Length)];
        BinaryPrimitives.WriteUInt32BigEndian(data, (uint)name.Length);
        name.CopyTo(data, 4);
        BinaryPrimitives.WriteUInt32BigEndian(data.AsSpan(4 + name.Length), (uint)parts.Length);
        int at = 8 + name.Length;
        foreach (var p in parts)
        {
            BinaryPrimitives.WriteUInt32BigEndian(data.AsSpan(at), (uint)p.Length);
            p.CopyTo(data, at + 4);
            at += 4 + p.Length;
        }
        return data;
    }
}
