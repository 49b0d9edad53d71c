using System.Buffers.Binary;
using Vdisk.Graph;

namespace Vdisk.Drivers.Vmdk;

/// <summary>How a grain of a sparse extent (or a whole flat extent) is stored.</summary>
public enum VmdkGrainKind
{
    /// <summary>Stored at a host offset of the extent file (flat extents, allocated grains).</summary>
    Allocated,
    /// <summary>Not stored: reads from the backing file, or zeroes.</summary>
    Unallocated,
    /// <summary>A zeroed grain (grain table entry 1 with the zeroed-grain flag): zeroes, never the backing file.</summary>
    Zeroed,
}

/// <summary>The result of looking a guest offset up in an extent (QEMU's get_cluster_offset).</summary>
/// <param name="Kind">How the grain is stored.</param>
/// <param name="HostOffset">Byte offset of the grain (or of the flat extent's data) in the extent file.</param>
/// <param name="TableOffset">The grain table's offset in sectors (0 when the directory entry is empty or the extent is flat).</param>
/// <param name="TableIndex">The directory index of the grain table.</param>
/// <param name="EntryIndex">The grain's index in its table.</param>
public readonly record struct VmdkGrain(VmdkGrainKind Kind, long HostOffset, uint TableOffset, int TableIndex, int EntryIndex);

/// <summary>
/// One extent of a VMDK image (QEMU's VmdkExtent): a file child holding a range of the guest
/// disk, either flat (the bytes as they are, from a start offset) or sparse (grains found
/// through a grain directory and 32-bit grain tables, optionally compressed with markers).
/// Not thread-safe: the node serializes metadata access.
/// </summary>
internal sealed class VmdkExtent
{
    private const int CachedTables = 16;
    private readonly Dictionary<uint, byte[]> _tables = new();
    private readonly Queue<uint> _tableOrder = new();

    public VmdkExtent(BdrvChild file, bool flat, long sectors, long startSector)
    {
        File = file;
        IsFlat = flat;
        Sectors = sectors;
        StartSector = startSector;
    }

    /// <summary>The file child the extent lives in (the node's own file for monolithic sparse images).</summary>
    public BdrvChild File { get; }

    /// <summary>FLAT or VMFS: no metadata, one "grain" covering the extent.</summary>
    public bool IsFlat { get; }

    /// <summary>Grains are deflate-compressed (stream-optimized); only unallocated grains may be written.</summary>
    public bool IsCompressed { get; init; }

    /// <summary>Grains start with a 12-byte marker (lba, size).</summary>
    public bool HasMarkers { get; init; }

    /// <summary>A grain table entry of 1 means a zeroed grain.</summary>
    public bool HasZeroGrain { get; init; }

    /// <summary>The header version (VMDK4), 0 otherwise.</summary>
    public int Version { get; init; }

    /// <summary>The type word of the descriptor line (null for a monolithic sparse file, as in QEMU).</summary>
    public string? Type { get; set; }

    /// <summary>Extent size in sectors.</summary>
    public long Sectors { get; }

    /// <summary>First guest sector of the extent.</summary>
    public long StartSector { get; }

    /// <summary>One past the last guest sector.</summary>
    public long EndSector => StartSector + Sectors;

    /// <summary>Where a flat extent's data starts in its file (bytes).</summary>
    public long FlatStartOffset { get; init; }

    /// <summary>The grain directory's byte offset.</summary>
    public long DirectoryOffset { get; init; }

    /// <summary>The redundant grain directory's byte offset, 0 when there is none.</summary>
    public long BackupDirectoryOffset { get; init; }

    /// <summary>Grain directory entries (grain table sector offsets).</summary>
    public uint[] Directory { get; set; } = [];

    /// <summary>The redundant directory, when there is one.</summary>
    public uint[]? BackupDirectory { get; set; }

    /// <summary>Entries per grain table.</summary>
    public int TableEntries { get; init; }

    /// <summary>Sectors per grain (the whole extent for flat ones).</summary>
    public long GrainSectors { get; init; }

    /// <summary>Bytes per grain.</summary>
    public long GrainBytes => GrainSectors * 512;

    /// <summary>Guest sectors one directory entry covers.</summary>
    public long DirectoryEntrySectors => TableEntries * GrainSectors;

    /// <summary>Where the next grain will be allocated, in sectors of the extent file.</summary>
    public long NextGrainSector { get; set; }

    /// <summary>Bytes of one grain table.</summary>
    public int TableBytes => TableEntries * 4;

    /// <summary>The grain at guest byte <paramref name="offset"/> (which lies in this extent).</summary>
    public async ValueTask<VmdkGrain?> LookupAsync(long offset, CancellationToken ct)
    {
        if (IsFlat) return new VmdkGrain(VmdkGrainKind.Allocated, FlatStartOffset, 0, 0, 0);
        long sector = (offset >> 9) - StartSector;
        long dirIndex = sector / DirectoryEntrySectors;
        if (dirIndex >= Directory.Length) return null;
        uint tableOffset = Directory[dirIndex];
        int entryIndex = (int)(sector / GrainSectors % TableEntries);
        if (tableOffset == 0) return new VmdkGrain(VmdkGrainKind.Unallocated, 0, 0, (int)dirIndex, entryIndex);
        var table = await TableAsync(tableOffset, ct).ConfigureAwait(false);
        uint entry = BinaryPrimitives.ReadUInt32LittleEndian(table.AsSpan(entryIndex * 4));
        var kind = entry == 0 ? VmdkGrainKind.Unallocated
            : HasZeroGrain && entry == 1 ? VmdkGrainKind.Zeroed
            : VmdkGrainKind.Allocated;
        return new VmdkGrain(kind, kind == VmdkGrainKind.Allocated ? (long)entry << 9 : 0, tableOffset, (int)dirIndex, entryIndex);
    }

    /// <summary>The grain table at <paramref name="tableSector"/>, from the cache or the file.</summary>
    private async ValueTask<byte[]> TableAsync(uint tableSector, CancellationToken ct)
    {
        if (_tables.TryGetValue(tableSector, out var cached)) return cached;
        var table = new byte[TableBytes];
        await File.Node.DebugEventAsync(BlkdebugEvent.L2Load).ConfigureAwait(false);
        await File.Node.ReadAsync((long)tableSector << 9, table, ct).ConfigureAwait(false);
        if (_tables.Count >= CachedTables) _tables.Remove(_tableOrder.Dequeue());
        _tables[tableSector] = table;
        _tableOrder.Enqueue(tableSector);
        return table;
    }

    /// <summary>
    /// Sets grain table entries <paramref name="first"/>.. of the table of directory entry
    /// <paramref name="dirIndex"/> to <paramref name="values"/>, in the table and in the redundant
    /// table, as vmdk_L2update does (the caller flushes).
    /// </summary>
    public async ValueTask UpdateEntriesAsync(int dirIndex, uint tableSector, int first, uint[] values, CancellationToken ct)
    {
        var bytes = new byte[values.Length * 4];
        for (int i = 0; i < values.Length; i++) BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(i * 4), values[i]);
        await File.Node.DebugEventAsync(BlkdebugEvent.L2Update).ConfigureAwait(false);
        await File.Node.WriteAsync(((long)tableSector << 9) + first * 4L, bytes, WriteFlags.None, ct).ConfigureAwait(false);
        if (BackupDirectoryOffset != 0 && BackupDirectory is { } backup && dirIndex < backup.Length)
            await File.Node.WriteAsync(((long)backup[dirIndex] << 9) + first * 4L, bytes, WriteFlags.None, ct).ConfigureAwait(false);
        if (_tables.TryGetValue(tableSector, out var cached)) bytes.CopyTo(cached.AsSpan(first * 4));
    }

    /// <summary>Forgets cached grain tables (after the image may have changed behind the node).</summary>
    public void DropCache()
    {
        _tables.Clear();
        _tableOrder.Clear();
    }

    /// <summary>Offset of <paramref name="offset"/> within its grain (QEMU's vmdk_find_offset_in_cluster).</summary>
    public long OffsetInGrain(long offset) => (offset - StartSector * 512) % GrainBytes;

    /// <summary>The guest byte offset of the start of the grain holding <paramref name="offset"/>.</summary>
    public long GrainStart(long offset) => offset - OffsetInGrain(offset);
}
