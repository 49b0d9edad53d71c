using System.Buffers.Binary;
using System.Text;

namespace Vdisk.Drivers.Qcow2;

/// <summary>A header extension as stored: its type and raw data (without padding).</summary>
public sealed record Qcow2HeaderExtension(uint Type, byte[] Data);

/// <summary>
/// The qcow2 header in cluster 0: the fixed fields, the v3 fields, unknown trailing header
/// fields, header extensions and the backing file name. <see cref="Parse"/> validates what QEMU
/// validates before anything else is read; <see cref="Serialize"/> lays cluster 0 out like
/// qcow2_update_header, keeping unknown fields and extensions.
/// </summary>
public sealed class Qcow2Header
{
    /// <summary>"QFI\xfb".</summary>
    public const uint Magic = 0x514649fb;
    /// <summary>Size of the v2 header.</summary>
    public const int V2HeaderLength = 72;
    /// <summary>Size of the header QEMU 7.2 writes for v3 (sizeof(QCowHeader)).</summary>
    public const int V3HeaderLength = 112;
    /// <summary>End of the header extension area.</summary>
    public const uint ExtensionEnd = 0;
    /// <summary>Backing file format name.</summary>
    public const uint ExtensionBackingFormat = 0xe2792aca;
    /// <summary>Feature name table.</summary>
    public const uint ExtensionFeatureTable = 0x6803f857;
    /// <summary>Bitmaps extension.</summary>
    public const uint ExtensionBitmaps = 0x23852875;
    /// <summary>Full disk encryption header pointer.</summary>
    public const uint ExtensionCrypto = 0x0537be77;
    /// <summary>External data file name.</summary>
    public const uint ExtensionDataFile = 0x44415441;

    /// <summary>2 or 3.</summary>
    public uint Version { get; set; } = 3;
    /// <summary>Where the backing file name is stored (0 = none).</summary>
    public ulong BackingFileOffset { get; set; }
    /// <summary>Length of the backing file name.</summary>
    public uint BackingFileSize { get; set; }
    /// <summary>log2 of the cluster size.</summary>
    public int ClusterBits { get; set; } = 16;
    /// <summary>Virtual size in bytes.</summary>
    public ulong Size { get; set; }
    /// <summary>0 none, 1 AES, 2 LUKS.</summary>
    public uint CryptMethod { get; set; }
    /// <summary>Entries in the active L1 table.</summary>
    public uint L1Size { get; set; }
    /// <summary>Offset of the active L1 table.</summary>
    public ulong L1TableOffset { get; set; }
    /// <summary>Offset of the refcount table.</summary>
    public ulong RefcountTableOffset { get; set; }
    /// <summary>Clusters of the refcount table.</summary>
    public uint RefcountTableClusters { get; set; }
    /// <summary>Number of internal snapshots.</summary>
    public uint SnapshotCount { get; set; }
    /// <summary>Offset of the snapshot table.</summary>
    public ulong SnapshotsOffset { get; set; }
    /// <summary>Incompatible feature bits.</summary>
    public ulong IncompatibleFeatures { get; set; }
    /// <summary>Compatible feature bits.</summary>
    public ulong CompatibleFeatures { get; set; }
    /// <summary>Autoclear feature bits.</summary>
    public ulong AutoclearFeatures { get; set; }
    /// <summary>log2 of the refcount width.</summary>
    public int RefcountOrder { get; set; } = 4;
    /// <summary>header_length as read (72 for v2).</summary>
    public uint HeaderLength { get; set; } = V3HeaderLength;
    /// <summary>The compression type byte.</summary>
    public Qcow2CompressionType CompressionType { get; set; }
    /// <summary>Header bytes past the fields vdisk knows (kept on rewrite).</summary>
    public byte[] UnknownHeaderFields { get; set; } = [];
    /// <summary>Header extensions in file order, known and unknown (the feature table excluded: it is regenerated).</summary>
    public List<Qcow2HeaderExtension> Extensions { get; } = new();
    /// <summary>The backing file name, or null.</summary>
    public string? BackingFile { get; set; }

    /// <summary>The backing file format from its extension, or null.</summary>
    public string? BackingFormat
    {
        get => Extensions.FirstOrDefault(e => e.Type == ExtensionBackingFormat) is { } e ? Encoding.UTF8.GetString(e.Data) : null;
        set
        {
            int i = Extensions.FindIndex(e => e.Type == ExtensionBackingFormat);
            if (value is null)
            {
                if (i >= 0) Extensions.RemoveAt(i);
            }
            else if (i >= 0) Extensions[i] = new(ExtensionBackingFormat, Encoding.UTF8.GetBytes(value));
            else Extensions.Insert(0, new(ExtensionBackingFormat, Encoding.UTF8.GetBytes(value)));
        }
    }

    /// <summary>
    /// The external data file name from its extension, or null (qcow2_read_extensions keeps the
    /// bytes as they are; setting null removes the extension, as amend with an empty name does).
    /// </summary>
    public string? DataFile
    {
        get => Extensions.FirstOrDefault(e => e.Type == ExtensionDataFile) is { } e ? Encoding.UTF8.GetString(e.Data) : null;
        set
        {
            Extensions.RemoveAll(e => e.Type == ExtensionDataFile);
            if (value is not null) Extensions.Add(new(ExtensionDataFile, Encoding.UTF8.GetBytes(value)));
        }
    }

    /// <summary>Incompatible bit 2: guest data lives in an external data file.</summary>
    public bool HasDataFile => (IncompatibleFeatures & Qcow2Features.IncompatDataFile) != 0;

    /// <summary>Autoclear bit 1: the data file is a valid raw image of the guest disk.</summary>
    public bool DataFileRaw => (AutoclearFeatures & Qcow2Features.AutoclearDataFileRaw) != 0;

    /// <summary>The geometry these fields describe.</summary>
    public Qcow2Geometry Geometry => new(ClusterBits, RefcountOrder);

    /// <summary>Bytes per cluster.</summary>
    public int ClusterSize => 1 << ClusterBits;

    /// <summary>The lazy_refcounts compatible bit.</summary>
    public bool LazyRefcounts => (CompatibleFeatures & Qcow2Features.CompatLazyRefcounts) != 0;

    /// <summary>The bitmaps extension data (nb_bitmaps, reserved, directory size, directory offset), or null.</summary>
    public (uint Count, ulong DirectorySize, ulong DirectoryOffset)? Bitmaps
    {
        get
        {
            var e = Extensions.FirstOrDefault(x => x.Type == ExtensionBitmaps);
            if (e is null || e.Data.Length < 24) return null;
            return (BinaryPrimitives.ReadUInt32BigEndian(e.Data), BinaryPrimitives.ReadUInt64BigEndian(e.Data.AsSpan(8)),
                BinaryPrimitives.ReadUInt64BigEndian(e.Data.AsSpan(16)));
        }
    }

    /// <summary>Bytes of cluster 0 read first: enough for the header area of images qemu-img writes.</summary>
    public const int HeaderAreaPrefix = 4096;

    /// <summary>
    /// Bytes of cluster 0 that <see cref="Parse"/> needs, given its first bytes in
    /// <paramref name="prefix"/>: at most <c>prefix.Length</c> when the header, the extension
    /// chain up to its end marker and the backing file name all lie inside it, else the whole
    /// cluster (at most 2 MiB). A header that Parse refuses needs no more than the prefix: it is
    /// refused on the same bytes.
    /// </summary>
    public static int BytesToRead(ReadOnlySpan<byte> prefix)
    {
        if (prefix.Length < V3HeaderLength || BinaryPrimitives.ReadUInt32BigEndian(prefix) != Magic) return prefix.Length;
        uint version = BinaryPrimitives.ReadUInt32BigEndian(prefix[4..]);
        uint bits = BinaryPrimitives.ReadUInt32BigEndian(prefix[20..]);
        if (version is < 2 or > 3 || bits is < Qcow2Geometry.MinClusterBits or > Qcow2Geometry.MaxClusterBits) return prefix.Length;
        int clusterSize = 1 << (int)bits;
        if (clusterSize <= prefix.Length) return clusterSize;
        ulong backingOffset = BinaryPrimitives.ReadUInt64BigEndian(prefix[8..]);
        uint backingSize = BinaryPrimitives.ReadUInt32BigEndian(prefix[16..]);
        long headerLength = version == 2 ? V2HeaderLength : BinaryPrimitives.ReadUInt32BigEndian(prefix[100..]);
        if (headerLength < V2HeaderLength || headerLength > clusterSize || backingOffset > (ulong)clusterSize) return prefix.Length;
        if (headerLength > prefix.Length) return clusterSize;
        if (backingOffset != 0 && (long)backingOffset + backingSize > prefix.Length) return clusterSize;
        // The extension chain as ReadExtensions walks it.
        long end = backingOffset != 0 ? (long)backingOffset : clusterSize;
        long offset = headerLength;
        while (offset < end)
        {
            if (offset + 8 > prefix.Length) return clusterSize;
            uint type = BinaryPrimitives.ReadUInt32BigEndian(prefix[(int)offset..]);
            uint length = BinaryPrimitives.ReadUInt32BigEndian(prefix[((int)offset + 4)..]);
            offset += 8;
            if (offset > end || length > end - offset || type == ExtensionEnd) return prefix.Length;
            offset += (length + 7) & ~7u;
            if (offset > prefix.Length) return clusterSize;
        }
        return prefix.Length;
    }

    /// <summary>
    /// Parses cluster 0 (short input is zero-extended, as reads past EOF are). Throws
    /// <see cref="Qcow2FormatException"/> with QEMU's messages for invalid headers.
    /// </summary>
    public static Qcow2Header Parse(ReadOnlySpan<byte> data)
    {
        Span<byte> fixedPart = stackalloc byte[V3HeaderLength];
        fixedPart.Clear();
        data[..Math.Min(data.Length, V3HeaderLength)].CopyTo(fixedPart);
        var h = new Qcow2Header();
        if (BinaryPrimitives.ReadUInt32BigEndian(fixedPart) != Magic) throw new Qcow2FormatException("Image is not in qcow2 format");
        h.Version = BinaryPrimitives.ReadUInt32BigEndian(fixedPart[4..]);
        if (h.Version is < 2 or > 3) throw new Qcow2FormatException($"Unsupported qcow2 version {h.Version}");
        uint clusterBits = BinaryPrimitives.ReadUInt32BigEndian(fixedPart[20..]);
        if (clusterBits is < Qcow2Geometry.MinClusterBits or > Qcow2Geometry.MaxClusterBits)
            throw new Qcow2FormatException($"Unsupported cluster size: 2^{clusterBits}");
        h.ClusterBits = (int)clusterBits;
        h.BackingFileOffset = BinaryPrimitives.ReadUInt64BigEndian(fixedPart[8..]);
        h.BackingFileSize = BinaryPrimitives.ReadUInt32BigEndian(fixedPart[16..]);
        h.Size = BinaryPrimitives.ReadUInt64BigEndian(fixedPart[24..]);
        h.CryptMethod = BinaryPrimitives.ReadUInt32BigEndian(fixedPart[32..]);
        h.L1Size = BinaryPrimitives.ReadUInt32BigEndian(fixedPart[36..]);
        h.L1TableOffset = BinaryPrimitives.ReadUInt64BigEndian(fixedPart[40..]);
        h.RefcountTableOffset = BinaryPrimitives.ReadUInt64BigEndian(fixedPart[48..]);
        h.RefcountTableClusters = BinaryPrimitives.ReadUInt32BigEndian(fixedPart[56..]);
        h.SnapshotCount = BinaryPrimitives.ReadUInt32BigEndian(fixedPart[60..]);
        h.SnapshotsOffset = BinaryPrimitives.ReadUInt64BigEndian(fixedPart[64..]);
        int clusterSize = 1 << h.ClusterBits;
        if (h.Version == 2)
        {
            h.RefcountOrder = 4;
            h.HeaderLength = V2HeaderLength;
        }
        else
        {
            h.IncompatibleFeatures = BinaryPrimitives.ReadUInt64BigEndian(fixedPart[72..]);
            h.CompatibleFeatures = BinaryPrimitives.ReadUInt64BigEndian(fixedPart[80..]);
            h.AutoclearFeatures = BinaryPrimitives.ReadUInt64BigEndian(fixedPart[88..]);
            uint order = BinaryPrimitives.ReadUInt32BigEndian(fixedPart[96..]);
            h.HeaderLength = BinaryPrimitives.ReadUInt32BigEndian(fixedPart[100..]);
            if (h.HeaderLength < 104) throw new Qcow2FormatException("qcow2 header too short");
            if (h.HeaderLength > clusterSize) throw new Qcow2FormatException("qcow2 header exceeds cluster size");
            if (h.HeaderLength > 104) h.CompressionType = (Qcow2CompressionType)fixedPart[104];
            h.RefcountOrder = order > 6 ? 7 : (int)order;
            if (h.HeaderLength > V3HeaderLength)
                h.UnknownHeaderFields = Slice(data, V3HeaderLength, (int)h.HeaderLength - V3HeaderLength);
        }
        if (h.BackingFileOffset > (ulong)clusterSize) throw new Qcow2FormatException("Invalid backing file offset");

        if (h.CompressionType is not (Qcow2CompressionType.Zlib or Qcow2CompressionType.Zstd))
            throw new Qcow2FormatException($"qcow2: unknown compression type: {(byte)h.CompressionType}");
        bool compressionBit = (h.IncompatibleFeatures & Qcow2Features.IncompatCompression) != 0;
        if (h.CompressionType == Qcow2CompressionType.Zlib && compressionBit)
            throw new Qcow2FormatException("qcow2: Compression type incompatible feature bit must not be set");
        if (h.CompressionType != Qcow2CompressionType.Zlib && !compressionBit)
            throw new Qcow2FormatException("qcow2: Compression type incompatible feature bit must be set");

        long extEnd = h.BackingFileOffset != 0 ? (long)h.BackingFileOffset : clusterSize;
        var featureNames = h.ReadExtensions(data, h.HeaderLength, extEnd);

        ulong unknown = h.IncompatibleFeatures & ~Qcow2Features.IncompatKnownToQemu;
        if (unknown != 0) throw new Qcow2FormatException(UnsupportedFeatureMessage(featureNames, unknown));
        if (h.RefcountOrder > 6) throw new Qcow2FormatException("Reference count entry width too large; may not exceed 64 bits");

        if (h.BackingFileOffset != 0)
        {
            long len = h.BackingFileSize;
            if (len > Math.Min(1023, clusterSize - (long)h.BackingFileOffset))
                throw new Qcow2FormatException("Backing file name too long");
            h.BackingFile = Encoding.UTF8.GetString(Slice(data, (int)h.BackingFileOffset, (int)len));
        }
        return h;
    }

    private static byte[] Slice(ReadOnlySpan<byte> data, int offset, int length)
    {
        var result = new byte[length];
        if (offset < data.Length) data[offset..Math.Min(data.Length, offset + length)].CopyTo(result);
        return result;
    }

    private List<(byte Type, byte Bit, string Name)> ReadExtensions(ReadOnlySpan<byte> data, long start, long end)
    {
        var names = new List<(byte, byte, string)>();
        long offset = start;
        while (offset < end)
        {
            var head = Slice(data, (int)offset, 8);
            uint type = BinaryPrimitives.ReadUInt32BigEndian(head);
            uint len = BinaryPrimitives.ReadUInt32BigEndian(head.AsSpan(4));
            offset += 8;
            if (offset > end || len > end - offset) throw new Qcow2FormatException("Header extension too large");
            if (type == ExtensionEnd) return names;
            var body = Slice(data, (int)offset, (int)len);
            switch (type)
            {
                case ExtensionBackingFormat:
                    if (len >= 16) throw new Qcow2FormatException($"ERROR: ext_backing_format: len={len} too large (>=16)");
                    // QEMU keeps the last one it reads and writes back only that one.
                    Extensions.RemoveAll(e => e.Type == ExtensionBackingFormat);
                    Extensions.Add(new(type, body));
                    break;
                case ExtensionFeatureTable:
                    // QEMU reads the table into a zeroed buffer, so a short last entry ends in NULs.
                    var table = new byte[(body.Length + 47) / 48 * 48];
                    body.CopyTo(table, 0);
                    for (int i = 0; i < table.Length; i += 48)
                    {
                        var nameBytes = table.AsSpan(i + 2, 46);
                        int nul = nameBytes.IndexOf((byte)0);
                        string name = Encoding.UTF8.GetString(nul < 0 ? nameBytes : nameBytes[..nul]);
                        if (name.Length == 0) break;
                        names.Add((table[i], table[i + 1], name));
                    }
                    break;
                case ExtensionDataFile:
                    // QEMU keeps the last one it reads (and writes back only that one).
                    Extensions.RemoveAll(e => e.Type == ExtensionDataFile);
                    Extensions.Add(new(type, body));
                    break;
                case ExtensionBitmaps:
                    if (len != 24) throw new Qcow2FormatException("bitmaps_ext: Invalid extension length");
                    Extensions.Add(new(type, body));
                    break;
                default:
                    Extensions.Add(new(type, body));
                    break;
            }
            offset += (len + 7) & ~7u;
        }
        return names;
    }

    /// <summary>report_unsupported_feature: names from the image's own table, then the unnamed rest.</summary>
    private static string UnsupportedFeatureMessage(List<(byte Type, byte Bit, string Name)> table, ulong mask)
    {
        var parts = new List<string>();
        foreach (var (type, bit, name) in table)
        {
            if (type != 0 || bit >= 64 || (mask & (1UL << bit)) == 0) continue;
            parts.Add(name.Length > 46 ? name[..46] : name);
            mask &= ~(1UL << bit);
        }
        if (mask != 0) parts.Add($"Unknown incompatible feature: {mask:x}");
        return "Unsupported qcow2 feature(s): " + string.Join(", ", parts);
    }

    /// <summary>
    /// Cluster 0 as qcow2_update_header writes it: header, backing format, other known
    /// extensions, the feature table (v3), unknown extensions, end marker, backing name.
    /// Sets <see cref="BackingFileOffset"/>, <see cref="BackingFileSize"/> and <see cref="HeaderLength"/>.
    /// </summary>
    public byte[] Serialize()
    {
        int clusterSize = ClusterSize;
        var buf = new byte[clusterSize];
        var s = buf.AsSpan();
        int headerLength = Version == 2 ? V2HeaderLength : V3HeaderLength + UnknownHeaderFields.Length;
        HeaderLength = (uint)headerLength;
        int pos = headerLength;

        void AddExtension(uint type, ReadOnlySpan<byte> body)
        {
            int padded = (body.Length + 7) & ~7;
            if (pos + 8 + padded > clusterSize) throw new Qcow2FormatException("Header extensions do not fit in the first cluster");
            BinaryPrimitives.WriteUInt32BigEndian(buf.AsSpan(pos), type);
            BinaryPrimitives.WriteUInt32BigEndian(buf.AsSpan(pos + 4), (uint)body.Length);
            body.CopyTo(buf.AsSpan(pos + 8));
            pos += 8 + padded;
        }

        foreach (var e in Extensions.Where(e => e.Type == ExtensionBackingFormat)) AddExtension(e.Type, e.Data);
        foreach (var e in Extensions.Where(e => e.Type == ExtensionDataFile)) AddExtension(e.Type, e.Data);
        foreach (var e in Extensions.Where(e => e.Type == ExtensionCrypto)) AddExtension(e.Type, e.Data);
        // qemu-img 7.2 leaves the table out of images with clusters of 4 KiB or less.
        if (Version >= 3 && clusterSize > 4096)
        {
            var table = new byte[Qcow2Features.NameTable.Length * 48];
            for (int i = 0; i < Qcow2Features.NameTable.Length; i++)
            {
                var (type, bit, name) = Qcow2Features.NameTable[i];
                table[i * 48] = type;
                table[i * 48 + 1] = bit;
                Encoding.ASCII.GetBytes(name, table.AsSpan(i * 48 + 2));
            }
            AddExtension(ExtensionFeatureTable, table);
        }
        foreach (var e in Extensions.Where(e => e.Type == ExtensionBitmaps)) AddExtension(e.Type, e.Data);
        foreach (var e in Extensions.Where(e => e.Type is not (ExtensionBackingFormat or ExtensionDataFile or ExtensionCrypto or ExtensionBitmaps or ExtensionFeatureTable)))
            AddExtension(e.Type, e.Data);
        if (pos + 8 > clusterSize) throw new Qcow2FormatException("Header extensions do not fit in the first cluster");
        pos += 8; // end marker: type 0, length 0

        if (BackingFile is not null)
        {
            var name = Encoding.UTF8.GetBytes(BackingFile);
            if (name.Length > 1023 || pos + name.Length > clusterSize)
                throw new Qcow2FormatException("Backing file name too long");
            name.CopyTo(s[pos..]);
            BackingFileOffset = (ulong)pos;
            BackingFileSize = (uint)name.Length;
            pos += name.Length;
        }
        else
        {
            BackingFileOffset = 0;
            BackingFileSize = 0;
        }

        BinaryPrimitives.WriteUInt32BigEndian(s, Magic);
        BinaryPrimitives.WriteUInt32BigEndian(s[4..], Version);
        BinaryPrimitives.WriteUInt64BigEndian(s[8..], BackingFileOffset);
        BinaryPrimitives.WriteUInt32BigEndian(s[16..], BackingFileSize);
        BinaryPrimitives.WriteUInt32BigEndian(s[20..], (uint)ClusterBits);
        BinaryPrimitives.WriteUInt64BigEndian(s[24..], Size);
        BinaryPrimitives.WriteUInt32BigEndian(s[32..], CryptMethod);
        BinaryPrimitives.WriteUInt32BigEndian(s[36..], L1Size);
        BinaryPrimitives.WriteUInt64BigEndian(s[40..], L1TableOffset);
        BinaryPrimitives.WriteUInt64BigEndian(s[48..], RefcountTableOffset);
        BinaryPrimitives.WriteUInt32BigEndian(s[56..], RefcountTableClusters);
        BinaryPrimitives.WriteUInt32BigEndian(s[60..], SnapshotCount);
        BinaryPrimitives.WriteUInt64BigEndian(s[64..], SnapshotsOffset);
        if (Version >= 3)
        {
            BinaryPrimitives.WriteUInt64BigEndian(s[72..], IncompatibleFeatures);
            BinaryPrimitives.WriteUInt64BigEndian(s[80..], CompatibleFeatures);
            BinaryPrimitives.WriteUInt64BigEndian(s[88..], AutoclearFeatures);
            BinaryPrimitives.WriteUInt32BigEndian(s[96..], (uint)RefcountOrder);
            BinaryPrimitives.WriteUInt32BigEndian(s[100..], HeaderLength);
            s[104] = (byte)CompressionType;
            UnknownHeaderFields.CopyTo(s[V3HeaderLength..]);
        }
        return buf;
    }

    /// <summary>Byte offset of the incompatible feature field (rewritten alone to set or clear the dirty bit).</summary>
    public const int IncompatibleFeaturesOffset = 72;
    /// <summary>Byte offset of the size field.</summary>
    public const int SizeOffset = 24;
    /// <summary>Byte offset of l1_size (followed by l1_table_offset).</summary>
    public const int L1SizeOffset = 36;
    /// <summary>Byte offset of l1_table_offset (followed by refcount_table_offset).</summary>
    public const int L1TableOffsetOffset = 40;
    /// <summary>Byte offset of refcount_table_offset (followed by refcount_table_clusters).</summary>
    public const int RefcountTableOffsetOffset = 48;
    /// <summary>Byte offset of nb_snapshots (followed by snapshots_offset).</summary>
    public const int SnapshotCountOffset = 60;
}
