using System.Buffers.Binary;
using Vdisk.Graph;
using Vdisk.Native;

namespace Vdisk.Drivers.Vhdx;

/// <summary>
/// The two headers of an open VHDX file and QEMU's way of updating them (vhdx_update_headers):
/// each update writes the non-current header with the next sequence number and this session's
/// file-write GUID, and is done twice so both headers carry the change.
/// </summary>
internal sealed class VhdxHeaders(BlockNode file, VhdxHeader[] headers, int current, Guid sessionGuid)
{
    private bool _firstVisibleWrite = true;

    /// <summary>Index of the current header.</summary>
    public int Current { get; private set; } = current;

    /// <summary>The current header.</summary>
    public VhdxHeader Active => headers[Current];

    /// <summary>Both updates of vhdx_update_headers.</summary>
    public async ValueTask UpdateAsync(bool newDataWriteGuid, Guid? logGuid, CancellationToken ct)
    {
        await UpdateOneAsync(newDataWriteGuid, logGuid, ct).ConfigureAwait(false);
        await UpdateOneAsync(newDataWriteGuid, logGuid, ct).ConfigureAwait(false);
    }

    private async ValueTask UpdateOneAsync(bool newDataWriteGuid, Guid? logGuid, CancellationToken ct)
    {
        int target = 1 - Current;
        var inactive = headers[target];
        inactive.SequenceNumber = unchecked(headers[Current].SequenceNumber + 1);
        inactive.FileWriteGuid = sessionGuid;
        if (newDataWriteGuid) inactive.DataWriteGuid = Guid.NewGuid();
        if (logGuid is Guid g) inactive.LogGuid = g;
        long at = target == 0 ? VhdxLayout.Header1Offset : VhdxLayout.Header2Offset;
        // The checksum covers the header's 4 KiB as they are on disk; only the fields are rewritten.
        var existing = new byte[VhdxLayout.HeaderChecksumSize];
        await FormatIo.ReadAsync(file, at, existing, ct).ConfigureAwait(false);
        var block = inactive.ToBlock(existing);
        await FormatIo.WriteSyncAsync(file, at, block.AsMemory(0, VhdxHeader.FieldsSize), ct).ConfigureAwait(false);
        Current = target;
    }

    /// <summary>vhdx_user_visible_write: before the first guest-visible change, new data-write GUIDs.</summary>
    public async ValueTask UserVisibleWriteAsync(CancellationToken ct)
    {
        if (!_firstVisibleWrite) return;
        _firstVisibleWrite = false;
        await UpdateAsync(true, null, ct).ConfigureAwait(false);
    }
}

/// <summary>A log entry header (64 bytes, "loge").</summary>
internal readonly record struct VhdxLogEntryHeader(uint Signature, uint Checksum, uint EntryLength, uint Tail, ulong Sequence,
    uint DescriptorCount, Guid LogGuid, ulong FlushedFileOffset, ulong LastFileOffset)
{
    public const int Size = 64;
    public const uint SignatureValue = 0x65676f6c;

    public static VhdxLogEntryHeader Read(ReadOnlySpan<byte> b) => new(
        BinaryPrimitives.ReadUInt32LittleEndian(b), BinaryPrimitives.ReadUInt32LittleEndian(b[4..]),
        BinaryPrimitives.ReadUInt32LittleEndian(b[8..]), BinaryPrimitives.ReadUInt32LittleEndian(b[12..]),
        BinaryPrimitives.ReadUInt64LittleEndian(b[16..]), BinaryPrimitives.ReadUInt32LittleEndian(b[24..]),
        new Guid(b.Slice(32, 16)), BinaryPrimitives.ReadUInt64LittleEndian(b[48..]), BinaryPrimitives.ReadUInt64LittleEndian(b[56..]));

    public void Write(Span<byte> b)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(b, Signature);
        BinaryPrimitives.WriteUInt32LittleEndian(b[4..], Checksum);
        BinaryPrimitives.WriteUInt32LittleEndian(b[8..], EntryLength);
        BinaryPrimitives.WriteUInt32LittleEndian(b[12..], Tail);
        BinaryPrimitives.WriteUInt64LittleEndian(b[16..], Sequence);
        BinaryPrimitives.WriteUInt32LittleEndian(b[24..], DescriptorCount);
        BinaryPrimitives.WriteUInt32LittleEndian(b[28..], 0);
        LogGuid.TryWriteBytes(b.Slice(32, 16));
        BinaryPrimitives.WriteUInt64LittleEndian(b[48..], FlushedFileOffset);
        BinaryPrimitives.WriteUInt64LittleEndian(b[56..], LastFileOffset);
    }
}

/// <summary>
/// A log descriptor (32 bytes): "desc" for a 4 KiB data sector (whose first 8 and last 4 bytes
/// it carries), or "zero" for a run of zeroed sectors.
/// </summary>
internal readonly record struct VhdxLogDescriptor(uint Signature, uint TrailingBytes, ulong LeadingOrZeroLength, ulong FileOffset, ulong Sequence)
{
    public const int Size = 32;
    public const uint DataSignature = 0x63736564;
    public const uint ZeroSignature = 0x6f72657a;

    public static VhdxLogDescriptor Read(ReadOnlySpan<byte> b) => new(
        BinaryPrimitives.ReadUInt32LittleEndian(b), BinaryPrimitives.ReadUInt32LittleEndian(b[4..]),
        BinaryPrimitives.ReadUInt64LittleEndian(b[8..]), BinaryPrimitives.ReadUInt64LittleEndian(b[16..]),
        BinaryPrimitives.ReadUInt64LittleEndian(b[24..]));

    public void Write(Span<byte> b)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(b, Signature);
        BinaryPrimitives.WriteUInt32LittleEndian(b[4..], TrailingBytes);
        BinaryPrimitives.WriteUInt64LittleEndian(b[8..], LeadingOrZeroLength);
        BinaryPrimitives.WriteUInt64LittleEndian(b[16..], FileOffset);
        BinaryPrimitives.WriteUInt64LittleEndian(b[24..], Sequence);
    }

    /// <summary>vhdx_log_desc_is_valid.</summary>
    public bool IsValidFor(in VhdxLogEntryHeader header) =>
        Sequence == header.Sequence && FileOffset % VhdxLog.SectorSize == 0 &&
        (Signature == DataSignature || (Signature == ZeroSignature && LeadingOrZeroLength % VhdxLog.SectorSize == 0));
}

/// <summary>
/// The VHDX metadata log, as QEMU 7.2's block/vhdx-log.c: a circular buffer of 4 KiB sectors.
/// An entry is a header sector (header and up to 126 descriptors), further descriptor sectors,
/// and one data sector per data descriptor; a CRC-32C covers it all. Entries are valid only
/// with the current header's log GUID. At open the whole buffer is searched for the sequence
/// with the highest sequence number, which is then replayed; QEMU writes one entry per BAT
/// change and replays it at once.
/// </summary>
internal sealed class VhdxLog(ulong offset, uint length)
{
    /// <summary>Log sector size.</summary>
    public const int SectorSize = 4096;
    private const int DataBytes = 4084;
    private const uint DataSectorSignature = 0x61746164;

    public ulong Offset { get; } = offset;
    public ulong Length { get; } = length;
    public uint Read { get; set; }
    public uint Write { get; set; }
    public ulong Sequence { get; set; }
    public uint Tail { get; set; }

    /// <summary>A window of the buffer being read: [Read, Write) with wrap-around.</summary>
    internal sealed class Cursor(uint read, uint write)
    {
        public uint Read = read;
        public uint Write = write;
    }

    /// <summary>The entries of a sequence to replay: where they are and how many.</summary>
    internal sealed record Sequence_(uint Read, uint Write, uint Count, VhdxLogEntryHeader First);

    private uint Next(uint index) => index + SectorSize >= Length ? 0 : index + SectorSize;

    /// <summary>vhdx_compute_desc_sectors: header sector with 126 descriptors, then 128 per sector (never 0).</summary>
    public static uint DescriptorSectors(uint descriptors)
    {
        uint count = unchecked(descriptors + 2);
        return count / 128 + (count % 128 != 0 ? 1u : 0u);
    }

    /// <summary>
    /// vhdx_parse_log: the log's placement checked (even when empty), and the sequence to replay,
    /// or null when the header says there is none or no valid entry was found.
    /// </summary>
    public static async ValueTask<Sequence_?> ParseAsync(BlockNode file, VhdxHeader header, VhdxLog log, CancellationToken ct)
    {
        if (log.Offset < 1 << 20 || log.Offset % (1 << 20) != 0) throw FormatIo.OpenError(file, Errno.EINVAL);
        if (header.LogVersion != 0) throw FormatIo.OpenError(file, Errno.EINVAL);
        if (header.LogGuid == Guid.Empty || header.LogLength == 0) return null;
        if (header.LogLength % (1 << 20) != 0) throw FormatIo.OpenError(file, Errno.EINVAL);
        var found = await log.SearchAsync(file, header.LogGuid, ct).ConfigureAwait(false);
        if (found is null) return null;
        log.Sequence = found.First.Sequence + 1;
        return found;
    }

    private async ValueTask<VhdxLogEntryHeader> PeekHeaderAsync(BlockNode file, Cursor c, CancellationToken ct)
    {
        if (c.Read % SectorSize != 0) throw FormatIo.OpenError(file, 14);
        uint read = c.Read + VhdxLogEntryHeader.Size > Length ? 0 : c.Read;
        if (read == c.Write) throw FormatIo.OpenError(file, Errno.EINVAL);
        var bytes = new byte[VhdxLogEntryHeader.Size];
        await FormatIo.ReadAsync(file, (long)(Offset + read), bytes, ct).ConfigureAwait(false);
        return VhdxLogEntryHeader.Read(bytes);
    }

    /// <summary>Reads up to <paramref name="count"/> sectors from the cursor; the number read (the window may end first).</summary>
    private async ValueTask<uint> ReadSectorsAsync(BlockNode file, Cursor c, Memory<byte> buffer, uint count, CancellationToken ct)
    {
        uint done = 0;
        while (count > 0 && c.Read != c.Write)
        {
            await FormatIo.ReadAsync(file, (long)(Offset + c.Read), buffer.Slice((int)(done * SectorSize), SectorSize), ct).ConfigureAwait(false);
            c.Read = Next(c.Read);
            done++;
            count--;
        }
        return done;
    }

    /// <summary>vhdx_log_hdr_is_valid.</summary>
    private bool HeaderIsValid(in VhdxLogEntryHeader h, Guid logGuid) =>
        h.Signature == VhdxLogEntryHeader.SignatureValue && Length >= h.EntryLength && h.EntryLength % SectorSize == 0 &&
        h.Sequence != 0 && h.LogGuid == logGuid && (ulong)h.DescriptorCount * VhdxLogDescriptor.Size <= h.EntryLength;

    /// <summary>vhdx_log_read_desc: the header and descriptor sectors of the entry at the cursor, every descriptor valid.</summary>
    private async ValueTask<(VhdxLogEntryHeader Header, byte[] Sectors)> ReadDescriptorsAsync(BlockNode file, Cursor c, Guid logGuid, CancellationToken ct)
    {
        var header = await PeekHeaderAsync(file, c, ct).ConfigureAwait(false);
        if (!HeaderIsValid(header, logGuid)) throw FormatIo.OpenError(file, Errno.EINVAL);
        uint sectors = DescriptorSectors(header.DescriptorCount);
        var buffer = new byte[sectors * SectorSize];
        if (await ReadSectorsAsync(file, c, buffer, sectors, ct).ConfigureAwait(false) != sectors) throw FormatIo.OpenError(file, Errno.EINVAL);
        for (int i = 0; i < header.DescriptorCount; i++)
        {
            if (!VhdxLogDescriptor.Read(buffer.AsSpan(VhdxLogEntryHeader.Size + i * VhdxLogDescriptor.Size)).IsValidFor(header))
                throw FormatIo.OpenError(file, Errno.EINVAL);
        }
        return (header, buffer);
    }

    /// <summary>
    /// vhdx_validate_log_entry: whether a whole, checksummed entry (following sequence number
    /// <paramref name="previous"/> when that is not 0) starts at the cursor. An entry whose header
    /// is wrong moves the cursor one sector on; a valid header moves it past the entry. An entry
    /// with a valid header but a bad descriptor is an error, as in QEMU.
    /// </summary>
    private async ValueTask<VhdxLogEntryHeader?> ValidateEntryAsync(BlockNode file, Cursor c, Guid logGuid, ulong previous, CancellationToken ct)
    {
        var header = await PeekHeaderAsync(file, c, ct).ConfigureAwait(false);
        if (!HeaderIsValid(header, logGuid) || (previous > 0 && header.Sequence != previous + 1))
        {
            c.Read = Next(c.Read);
            return null;
        }
        uint descriptorSectors = DescriptorSectors(header.DescriptorCount);
        uint totalSectors = header.EntryLength / SectorSize;
        var (_, sectors) = await ReadDescriptorsAsync(file, c, logGuid, ct).ConfigureAwait(false);
        BinaryPrimitives.WriteUInt32LittleEndian(sectors.AsSpan(4), 0);
        uint crc = Crc32C.Append(0xFFFFFFFF, sectors);
        var data = new byte[SectorSize];
        for (uint i = descriptorSectors; i < totalSectors; i++)
        {
            if (await ReadSectorsAsync(file, c, data, 1, ct).ConfigureAwait(false) != 1) return null;
            crc = Crc32C.Append(crc, data);
        }
        return ~crc == header.Checksum ? header : null;
    }

    /// <summary>
    /// vhdx_log_search: every sector of the buffer tried as the start of a sequence of valid
    /// entries; the sequence whose first entry has the highest sequence number wins.
    /// </summary>
    private async ValueTask<Sequence_?> SearchAsync(BlockNode file, Guid logGuid, CancellationToken ct)
    {
        // The whole buffer is the window: "write" at the end, so reads never stop early.
        var c = new Cursor(0, (uint)Length);
        Sequence_? candidate = null;
        while (true)
        {
            uint tail = c.Read;
            var first = await ValidateEntryAsync(file, c, logGuid, 0, ct).ConfigureAwait(false);
            if (first is { } header)
            {
                uint write = c.Read, count = 1;
                // QEMU checks the second entry without a sequence number (its running number
                // starts at 0) and every later one against the one before.
                ulong previous = 0;
                while (await ValidateEntryAsync(file, c, logGuid, previous, ct).ConfigureAwait(false) is { } next)
                {
                    write = c.Read;
                    count++;
                    previous = next.Sequence;
                }
                if (candidate is null || header.Sequence > candidate.First.Sequence) candidate = new Sequence_(tail, write, count, header);
            }
            if (c.Read < tail) break;
        }
        return candidate;
    }

    /// <summary>
    /// vhdx_log_flush: applies every entry of <paramref name="sequence"/> to the file (each
    /// sector written and flushed), grows the file to the entries' last file offset when that is
    /// not 1 MiB aligned (QEMU's rule), flushes, and empties the log (zero log GUID in both headers).
    /// </summary>
    public async ValueTask ReplayAsync(BlockNode file, Sequence_ sequence, VhdxHeaders headers, CancellationToken ct)
    {
        var c = new Cursor(sequence.Read, sequence.Write);
        await headers.UserVisibleWriteAsync(ct).ConfigureAwait(false);
        var data = new byte[SectorSize];
        for (uint n = 0; n < sequence.Count; n++)
        {
            var peek = await PeekHeaderAsync(file, c, ct).ConfigureAwait(false);
            long fileLength = file.Length;
            // A flushed offset past the end means the file was truncated: refuse it.
            if (peek.FlushedFileOffset > (ulong)fileLength) throw FormatIo.OpenError(file, Errno.EINVAL);
            var (header, sectors) = await ReadDescriptorsAsync(file, c, headers.Active.LogGuid, ct).ConfigureAwait(false);
            for (int i = 0; i < header.DescriptorCount; i++)
            {
                var d = VhdxLogDescriptor.Read(sectors.AsSpan(VhdxLogEntryHeader.Size + i * VhdxLogDescriptor.Size));
                if (d.Signature == VhdxLogDescriptor.DataSignature)
                {
                    if (await ReadSectorsAsync(file, c, data, 1, ct).ConfigureAwait(false) != 1) throw FormatIo.OpenError(file, Errno.EINVAL);
                }
                await ApplyAsync(file, d, data, ct).ConfigureAwait(false);
            }
            if ((ulong)fileLength < header.LastFileOffset && header.LastFileOffset % (1 << 20) != 0)
            {
                ulong size = (header.LastFileOffset + (1 << 20) - 1) & ~((1UL << 20) - 1);
                if (size > long.MaxValue) throw FormatIo.OpenError(file, Errno.EINVAL);
                await file.TruncateAsync((long)size, ct).ConfigureAwait(false);
            }
        }
        await file.FlushAsync(ct).ConfigureAwait(false);
        Read = Write = 0;
        await headers.UpdateAsync(false, Guid.Empty, ct).ConfigureAwait(false);
        _lastReplayCursor = c;
    }

    private Cursor? _lastReplayCursor;

    /// <summary>vhdx_log_flush_desc: one data sector (its ends from the descriptor) or a run of zero sectors.</summary>
    private static async ValueTask ApplyAsync(BlockNode file, VhdxLogDescriptor d, byte[] dataSector, CancellationToken ct)
    {
        var sector = new byte[SectorSize];
        ulong count = 1;
        if (d.Signature == VhdxLogDescriptor.DataSignature)
        {
            ulong sequence = ((ulong)BinaryPrimitives.ReadUInt32LittleEndian(dataSector.AsSpan(4)) << 32)
                | BinaryPrimitives.ReadUInt32LittleEndian(dataSector.AsSpan(SectorSize - 4));
            if (sequence != d.Sequence) throw FormatIo.OpenError(file, Errno.EINVAL);
            BinaryPrimitives.WriteUInt64LittleEndian(sector, d.LeadingOrZeroLength);
            dataSector.AsSpan(8, DataBytes).CopyTo(sector.AsSpan(8));
            BinaryPrimitives.WriteUInt32LittleEndian(sector.AsSpan(SectorSize - 4), d.TrailingBytes);
        }
        else if (d.Signature == VhdxLogDescriptor.ZeroSignature)
        {
            count = d.LeadingOrZeroLength / SectorSize;
        }
        else
        {
            Diagnostics.Error($"Invalid VHDX log descriptor entry signature 0x{d.Signature:x}");
            throw FormatIo.OpenError(file, Errno.EINVAL);
        }
        ulong at = d.FileOffset;
        for (ulong i = 0; i < count; i++, at += SectorSize)
            await FormatIo.WriteSyncAsync(file, (long)at, sector, ct).ConfigureAwait(false);
    }

    /// <summary>
    /// Builds the entry vhdx_log_write journals for <paramref name="data"/> at file offset
    /// <paramref name="offset"/>: one data descriptor per 4 KiB sector touched, partial sectors
    /// completed from <paramref name="readSector"/> (the file's current contents).
    /// </summary>
    internal static async ValueTask<byte[]> BuildEntryAsync(ReadOnlyMemory<byte> data, ulong offset, ulong sequence, uint tail, Guid logGuid,
        ulong fileLength, Func<ulong, Memory<byte>, ValueTask> readSector)
    {
        int length = data.Length;
        int sectorOffset = (int)(offset % SectorSize);
        ulong fileOffset = offset - (ulong)sectorOffset;
        int aligned = length, leading = 0, partial = 0;
        if (sectorOffset != 0)
        {
            leading = Math.Min(SectorSize - sectorOffset, length);
            aligned -= leading;
            partial++;
        }
        int sectors = aligned / SectorSize;
        int trailing = aligned - sectors * SectorSize;
        if (trailing != 0) partial++;
        sectors += partial;

        uint descriptorSectors = DescriptorSectors((uint)sectors);
        int total = (int)(descriptorSectors + sectors) * SectorSize;
        var entry = new byte[total];
        new VhdxLogEntryHeader(VhdxLogEntryHeader.SignatureValue, 0, (uint)total, tail, sequence, (uint)sectors, logGuid, fileLength, fileLength)
            .Write(entry);
        var merged = new byte[SectorSize];
        int consumed = 0;
        for (int i = 0; i < sectors; i++)
        {
            ReadOnlySpan<byte> sector;
            int used;
            if (i == 0 && leading != 0)
            {
                await readSector(fileOffset, merged).ConfigureAwait(false);
                data.Span.Slice(consumed, leading).CopyTo(merged.AsSpan(sectorOffset));
                used = leading;
                sector = merged;
            }
            else if (i == sectors - 1 && trailing != 0)
            {
                await readSector(fileOffset, merged).ConfigureAwait(false);
                data.Span.Slice(consumed, trailing).CopyTo(merged);
                used = trailing;
                sector = merged;
            }
            else
            {
                used = SectorSize;
                sector = data.Span.Slice(consumed, SectorSize);
            }
            new VhdxLogDescriptor(VhdxLogDescriptor.DataSignature, BinaryPrimitives.ReadUInt32LittleEndian(sector[(SectorSize - 4)..]),
                BinaryPrimitives.ReadUInt64LittleEndian(sector), fileOffset, sequence)
                .Write(entry.AsSpan(VhdxLogEntryHeader.Size + i * VhdxLogDescriptor.Size));
            var dataSector = entry.AsSpan((int)((descriptorSectors + i) * SectorSize), SectorSize);
            BinaryPrimitives.WriteUInt32LittleEndian(dataSector, DataSectorSignature);
            BinaryPrimitives.WriteUInt32LittleEndian(dataSector[4..], (uint)(sequence >> 32));
            sector.Slice(8, DataBytes).CopyTo(dataSector[8..]);
            BinaryPrimitives.WriteUInt32LittleEndian(dataSector[(SectorSize - 4)..], (uint)sequence);
            consumed += used;
            fileOffset += SectorSize;
        }
        Crc32C.Store(entry, 4);
        return entry;
    }

    /// <summary>
    /// vhdx_log_write_and_flush: flush, journal <paramref name="data"/> for <paramref name="offset"/>
    /// (giving the log a fresh GUID first), flush, then replay it and empty the log.
    /// </summary>
    public async ValueTask WriteAndFlushAsync(BlockNode file, VhdxHeaders headers, ReadOnlyMemory<byte> data, ulong offset, CancellationToken ct)
    {
        await file.FlushAsync(ct).ConfigureAwait(false);
        if ((ulong)data.Length > headers.Active.LogLength) throw new NativeIOException(Errno.EINVAL, NativeIOException.Describe(Errno.EINVAL), file.Filename);
        // QEMU journals only into an empty log, and flushes it after every entry.
        if (headers.Active.LogGuid != Guid.Empty) throw new NativeIOException(Errno.ENOTSUP, NativeIOException.Describe(Errno.ENOTSUP), file.Filename);
        await headers.UpdateAsync(false, Guid.NewGuid(), ct).ConfigureAwait(false);
        if (Sequence == 0) Sequence = 1;
        var entry = await BuildEntryAsync(data, offset, Sequence, Tail, headers.Active.LogGuid, (ulong)file.Length,
            (at, into) => FormatIo.ReadAsync(file, (long)at, into, ct)).ConfigureAwait(false);

        await headers.UserVisibleWriteAsync(ct).ConfigureAwait(false);
        uint write = Write, written = 0, sectors = (uint)(entry.Length / SectorSize);
        while (written < sectors)
        {
            ulong at = Offset + write;
            write = Next(write);
            if (write == Read) break;
            await file.WriteAsync((long)at, entry.AsMemory((int)(written * SectorSize), SectorSize), WriteFlags.None, ct).ConfigureAwait(false);
            Write = write;
            written++;
        }
        if (written != sectors) throw new NativeIOException(Errno.EINVAL, NativeIOException.Describe(Errno.EINVAL), file.Filename);
        Sequence++;
        Tail = Write;
        await file.FlushAsync(ct).ConfigureAwait(false);

        await ReplayAsync(file, new Sequence_(Read, Write, 1, default), headers, ct).ConfigureAwait(false);
        // QEMU then takes over the replay's window: reading resumes where the entry ended.
        Read = _lastReplayCursor!.Read;
        Write = _lastReplayCursor.Write;
    }
}
