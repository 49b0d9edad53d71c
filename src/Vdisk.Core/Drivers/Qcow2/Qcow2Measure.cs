using Vdisk.Graph;
using Vdisk.Native;
using Vdisk.Options;

namespace Vdisk.Drivers.Qcow2;

/// <summary>
/// qcow2_measure (qcow2_calc_prealloc_size's arithmetic), reading the create options the way
/// the driver does, with its messages.
/// </summary>
public static class Qcow2Measure
{
    /// <summary>QCOW_MAX_L1_SIZE: 32 MiB of L1 table.</summary>
    private const long MaxL1Bytes = 32L << 20;

    /// <summary>
    /// Measures a new qcow2 image with <paramref name="options"/> (the size set from --size, if
    /// given), for the contents of <paramref name="input"/> if not null.
    /// </summary>
    /// <exception cref="NativeIOException">The options are refused (EINVAL, QEMU's message) or the input cannot be read.</exception>
    public static async Task<MeasureResult> MeasureAsync(QemuOpts options, BlockNode? input, CancellationToken ct = default)
    {
        var s = Settings(options);
        long clusterSize = s.ClusterSize;
        ulong virtualSize = RoundUp(options.GetNumber("size") ?? 0, (ulong)clusterSize);
        long l2EntrySize = s.ExtendedL2 ? 16 : 8;
        // The size check reads the size option only, so it never applies to an input image's size.
        ulong l2Tables = DivRoundUp(virtualSize / (ulong)clusterSize, (ulong)(clusterSize / l2EntrySize));
        if (l2Tables > (ulong)(MaxL1Bytes / 8))
            throw new NativeIOException(Errno.EINVAL, "The image size is too large (try using a larger cluster size)");
        long aligned = (long)virtualSize;
        long required = 0;
        if (input is not null)
        {
            aligned = (long)RoundUp((ulong)input.Length, (ulong)clusterSize);
            // With a backing file, qemu-img cannot know what it shares with the input: all of it counts.
            required = s.HasBackingFile ? aligned : await AllocatedBytesAsync(input, clusterSize, ct).ConfigureAwait(false);
        }
        if (s.Preallocation is Preallocation.Full or Preallocation.Falloc) required = aligned;
        long fully = PreallocSize(aligned, clusterSize, System.Numerics.BitOperations.Log2((ulong)s.RefcountBits), s.ExtendedL2);
        // The LUKS header's clusters count in both figures (qcow2_measure's luks_payload_size).
        long? bitmaps = s.Version >= 3 && input is Qcow2Node { Header.Version: >= 3 }
            ? Qcow2BitmapDirectory.MeasureBytes(input.DirtyBitmaps.Where(b => b.Persistent).Select(b => (b.Name, b.Granularity)), input.Length, clusterSize)
            : null;
        return new MeasureResult(s.LuksPayloadBytes + fully - aligned + required, s.LuksPayloadBytes + fully, bitmaps);
    }

    /// <summary>The qcow2 create options qcow2_measure reads.</summary>
    internal sealed record MeasureSettings(long ClusterSize, int Version, long RefcountBits, Preallocation Preallocation, bool HasBackingFile, bool ExtendedL2, long LuksPayloadBytes);

    /// <summary>
    /// qcow2_measure's reading of the options, in its order: extended_l2, cluster_size,
    /// compat (0.10 or 1.1 only), refcount_bits, preallocation, backing_file, encrypt.format
    /// (luks: its header, rounded up to clusters).
    /// </summary>
    internal static MeasureSettings Settings(QemuOpts options)
    {
        static NativeIOException Refused(string message) => new(Errno.EINVAL, message);
        bool extendedL2 = options.GetBool("extended_l2") ?? false;
        ulong clusterSize = options.GetNumber("cluster_size") ?? 65536;
        int bits = System.Numerics.BitOperations.TrailingZeroCount((uint)clusterSize);
        if (bits < 9 || bits > 21 || (1UL << bits) != clusterSize)
            throw Refused("Cluster size must be a power of two between 512 and 2048k");
        if (extendedL2 && clusterSize < 16384)
            throw Refused("Extended L2 entries are only supported with cluster sizes of at least 16384 bytes");
        int version = options.Get("compat") switch
        {
            null or "1.1" => 3,
            "0.10" => 2,
            var v => throw Refused($"Invalid compatibility level: '{v}'"),
        };
        ulong refcountBits = options.GetNumber("refcount_bits") ?? 16;
        if (refcountBits > 64 || !ulong.IsPow2(refcountBits))
            throw Refused("Refcount width must be a power of two and may not exceed 64 bits");
        if (version < 3 && refcountBits != 16)
            throw Refused("Different refcount widths than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)");
        var preallocation = options.Get("preallocation") switch
        {
            null or "off" => Preallocation.Off,
            "metadata" => Preallocation.Metadata,
            "falloc" => Preallocation.Falloc,
            "full" => Preallocation.Full,
            var v => throw Refused($"invalid parameter value: {v}"),
        };
        bool hasBackingFile = options.Contains("backing_file");
        long luksPayload = options.Get("encrypt.format") == "luks" ? (long)RoundUp((ulong)LuksHeaderBytes(options), clusterSize) : 0;
        return new MeasureSettings((long)clusterSize, version, (long)refcountBits, preallocation, hasBackingFile, extendedL2, luksPayload);
    }

    /// <summary>
    /// qcrypto_block_calculate_payload_offset for encrypt.format=luks: the encrypt.* options
    /// read as a LUKS create (the visitor sees them without the prefix, so its messages name
    /// them bare), the secret looked up, and the header's length for the master key's size.
    /// Only "aes" encryption leaves the size as without encryption.
    /// </summary>
    private static long LuksHeaderBytes(QemuOpts options)
    {
        try
        {
            var luks = Crypto.LuksCreateOptions.From(options.Get, "encrypt.", visitorPath: "");
            string secret = options.Get("encrypt.key-secret") ?? throw new OptionException("Parameter 'encrypt.key-secret' is required for cipher");
            Crypto.Secrets.LookupPassphrase(secret);
            luks.Validate();
            int keyBytes = Crypto.CryptoAlgorithms.KeyLength(luks.Cipher) * (luks.Mode == Crypto.CipherMode.Xts ? 2 : 1);
            return Crypto.LuksHeader.PayloadOffsetFor(keyBytes);
        }
        catch (OptionException e)
        {
            throw new NativeIOException(Errno.EINVAL, e.Message);
        }
    }

    /// <summary>The input's data clusters: allocated data ranges, each widened to whole target clusters.</summary>
    private static async Task<long> AllocatedBytesAsync(BlockNode input, long clusterSize, CancellationToken ct)
    {
        long required = 0, covered = 0;
        const BlockStatusFlags dataAllocated = BlockStatusFlags.Data | BlockStatusFlags.Allocated;
        await foreach (var extent in BlockExtents.WalkAsync(input, 0, input.Length, ExtentScope.Chain, cancellationToken: ct).ConfigureAwait(false))
        {
            // An extent the previous one's cluster widening already counted adds only what lies beyond it.
            if (extent.End <= covered) continue;
            long pos = Math.Max(extent.Offset, covered);
            if ((extent.Flags & BlockStatusFlags.Zero) != 0 || (extent.Flags & dataAllocated) != dataAllocated) continue;
            long n = (long)RoundUp((ulong)extent.End, (ulong)clusterSize) - pos;
            required += pos % clusterSize + n;
            covered = pos + n;
        }
        return required;
    }

    /// <summary>qcow2_calc_prealloc_size: data plus header, L2 and L1 tables and refcount metadata.</summary>
    public static long PreallocSize(long alignedTotal, long clusterSize, int refcountOrder, bool extendedL2 = false)
    {
        long l2EntrySize = extendedL2 ? 16 : 8;
        long meta = clusterSize;
        long l2e = alignedTotal / clusterSize;
        l2e = (l2e + clusterSize / l2EntrySize - 1) / (clusterSize / l2EntrySize) * (clusterSize / l2EntrySize);
        meta += l2e * l2EntrySize;
        long l1e = l2e * l2EntrySize / clusterSize;
        l1e = (l1e + clusterSize / 8 - 1) / (clusterSize / 8) * (clusterSize / 8);
        meta += l1e * 8;
        meta += RefcountMetadataSize((meta + alignedTotal) / clusterSize, clusterSize, refcountOrder);
        return meta + alignedTotal;
    }

    /// <summary>qcow2_refcount_metadata_size: the fixed point where refcount blocks and table count themselves.</summary>
    public static long RefcountMetadataSize(long clusters, long clusterSize, int refcountOrder)
    {
        long perTable = clusterSize / 8;
        long perBlock = clusterSize * 8 / (1L << refcountOrder);
        long table = 0, blocks = 0, n = 0, last;
        do
        {
            last = n;
            blocks = (clusters + table + blocks + perBlock - 1) / perBlock;
            table = (blocks + perTable - 1) / perTable;
            n = clusters + blocks + table;
        } while (n != last);
        return (blocks + table) * clusterSize;
    }

    private static ulong RoundUp(ulong value, ulong unit) => (value + unit - 1) / unit * unit;

    private static ulong DivRoundUp(ulong value, ulong unit) => (value + unit - 1) / unit;
}
