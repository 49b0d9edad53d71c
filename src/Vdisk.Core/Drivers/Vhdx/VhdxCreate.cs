using System.Buffers.Binary;
using System.Numerics;
using System.Security.Cryptography;
using Vdisk.Graph;

namespace Vdisk.Drivers.Vhdx;

/// <summary>The options of a new vhdx image, as qemu-img create's <c>-o</c> gives them (null: not given).</summary>
/// <param name="Size">The requested virtual size in bytes.</param>
/// <param name="LogSize">log_size.</param>
/// <param name="BlockSize">block_size (0 means chosen from the size).</param>
/// <param name="Subformat">"dynamic" (the default) or "fixed".</param>
/// <param name="BlockStateZero">block_state_zero (default on): payload blocks start in state ZERO.</param>
public sealed record VhdxCreateOptions(ulong Size, ulong? LogSize, ulong? BlockSize, string? Subformat, bool? BlockStateZero);

/// <summary>What <see cref="VhdxCreate.Plan"/> decided.</summary>
/// <param name="Size">Virtual size (whole sectors).</param>
/// <param name="LogSize">Log length (whole MiB).</param>
/// <param name="BlockSize">Payload block size (a power of two, 1 to 256 MiB).</param>
/// <param name="Fixed">subformat=fixed.</param>
/// <param name="ZeroBlocks">BAT entries start in state ZERO.</param>
public readonly record struct VhdxCreatePlan(ulong Size, uint LogSize, uint BlockSize, bool Fixed, bool ZeroBlocks);

/// <summary>
/// vhdx_co_create_opts and vhdx_co_create (QEMU 7.2): the file identifier with a creator string,
/// two headers (a random sequence number and its successor, no log GUID), the log right after
/// the 1 MiB header section, the BAT after the log, the metadata region (1 MiB) after the BAT,
/// and payload data from 5 MiB past the BAT's end. A dynamic file ends there; a fixed one is
/// truncated to hold the whole disk. The BAT is written only when its entries are not all zero:
/// every payload block in state ZERO (block_state_zero, the default, even for fixed disks), or
/// fully present at its place in the file (fixed disks with block_state_zero=off).
/// </summary>
public static class VhdxCreate
{
    private const ulong MiB = 1 << 20;
    private const uint DefaultLogSize = 1 << 20;

    /// <summary>The option checks and rounding QEMU makes, in its order, before anything but the file is written.</summary>
    /// <exception cref="CreateException">QEMU's message.</exception>
    public static VhdxCreatePlan Plan(VhdxCreateOptions o)
    {
        bool isFixed = o.Subformat switch
        {
            null or "dynamic" => false,
            "fixed" => true,
            _ => throw new CreateException($"Parameter 'subformat' does not accept value '{o.Subformat}'"),
        };
        // "Silently round up sizes": the disk to a sector, the log and block size to MiB (block
        // size 0 means automatic, more than the maximum means the maximum).
        ulong size = RoundUp(o.Size, 512);
        ulong? logSize = o.LogSize is { } l ? RoundUp(l, MiB) : null;
        ulong? blockSize = o.BlockSize is { } b ? RoundUp(b, MiB) : null;
        if (blockSize == 0) blockSize = null;
        if (blockSize > VhdxLayout.MaxBlockSize) blockSize = VhdxLayout.MaxBlockSize;

        if (size > VhdxLayout.MaxImageSize) throw new CreateException("Image size too large; max of 64TB");
        if (logSize > uint.MaxValue) throw new CreateException("Log size must be smaller than 4 GB");
        uint log = (uint)(logSize ?? DefaultLogSize);
        if (log < MiB || log % MiB != 0) throw new CreateException("Log size must be a multiple of 1 MB");
        // Arbitrary, as QEMU says: they keep the BAT small enough to load into memory.
        ulong block = blockSize ?? size switch
        {
            > 32UL << 40 => 64 * MiB,
            > 100UL << 30 => 32 * MiB,
            > 1UL << 30 => 16 * MiB,
            _ => 8 * MiB,
        };
        if (block < MiB || block % MiB != 0) throw new CreateException("Block size must be a multiple of 1 MB");
        if (!BitOperations.IsPow2(block)) throw new CreateException("Block size must be a power of two");
        return new VhdxCreatePlan(size, log, (uint)block, isFixed, o.BlockStateZero ?? true);
    }

    private static ulong RoundUp(ulong value, ulong to) => unchecked((value + to - 1) / to * to);

    /// <summary>
    /// Writes the new image onto <paramref name="file"/>, an empty file opened for writing and
    /// resizing, in vhdx_co_create's order.
    /// </summary>
    public static async Task WriteAsync(BlockNode file, VhdxCreateOptions o, CancellationToken ct = default)
    {
        var plan = Plan(o);

        // (A) The file identifier: signature and a UTF-16 creator (diagnostic only).
        await file.WriteAsync(0, VhdxLayout.FileSignature.ToArray(), WriteFlags.None, ct).ConfigureAwait(false);
        await file.WriteAsync(8, System.Text.Encoding.Unicode.GetBytes("vdisk " + Version), WriteFlags.None, ct).ConfigureAwait(false);

        // (B), (C): both headers, the second one current.
        var header = VhdxHeader.Empty();
        header.Signature = VhdxHeader.SignatureValue;
        header.SequenceNumber = (uint)RandomNumberGenerator.GetInt32(int.MinValue, int.MaxValue);
        header.Version = 1;
        header.LogLength = plan.LogSize;
        header.LogOffset = (ulong)VhdxLayout.HeaderSectionEnd;
        header.FileWriteGuid = Guid.NewGuid();
        header.DataWriteGuid = Guid.NewGuid();
        await FormatIo.WriteSyncAsync(file, VhdxLayout.Header1Offset, header.ToBlock([]), ct).ConfigureAwait(false);
        header.SequenceNumber++;
        await FormatIo.WriteSyncAsync(file, VhdxLayout.Header2Offset, header.ToBlock([]), ct).ConfigureAwait(false);

        // (D), (E), (G): the region table (BAT after the log, metadata after the BAT) and the BAT.
        uint batEntries = VhdxLayout.BatEntries(plan.Size, plan.BlockSize, out int chunkRatioBits);
        ulong batOffset = RoundUp((ulong)VhdxLayout.HeaderSectionEnd + plan.LogSize, MiB);
        uint batLength = (uint)RoundUp((ulong)batEntries * 8, MiB);
        ulong metadataOffset = RoundUp(batOffset + batLength, MiB);
        var table = new byte[VhdxLayout.HeaderBlockSize];
        BinaryPrimitives.WriteUInt32LittleEndian(table, RegionTableSignature);
        BinaryPrimitives.WriteUInt32LittleEndian(table.AsSpan(8), 2);
        new VhdxRegion(VhdxLayout.BatGuid, batOffset, batLength, Required: false).Write(table.AsSpan(16));
        new VhdxRegion(VhdxLayout.MetadataGuid, metadataOffset, (uint)MiB, Required: false).Write(table.AsSpan(48));
        Crc32C.Store(table, 4);

        await WriteBatAsync(file, plan, batOffset, batLength, chunkRatioBits, ct).ConfigureAwait(false);
        await file.WriteAsync(VhdxLayout.RegionTableOffset, table, WriteFlags.None, ct).ConfigureAwait(false);
        await file.WriteAsync(VhdxLayout.RegionTable2Offset, table, WriteFlags.None, ct).ConfigureAwait(false);

        // (H): the metadata table and its five items, which start 64 KiB into the region.
        await WriteMetadataAsync(file, plan, (long)metadataOffset, ct).ConfigureAwait(false);
    }

    private const uint RegionTableSignature = 0x69676572;

    private static string Version => typeof(VhdxCreate).Assembly.GetName().Version?.ToString(3) ?? "";

    /// <summary>
    /// vhdx_create_bat: the file grows to where payload data begins (5 MiB past the BAT, plus the
    /// whole disk for a fixed one); entries that are not all zero are then written, payload
    /// entries in the state the options ask for, sector-bitmap entries left zero.
    /// </summary>
    private static async Task WriteBatAsync(BlockNode file, VhdxCreatePlan plan, ulong batOffset, uint batLength, int chunkRatioBits, CancellationToken ct)
    {
        ulong dataOffset = batOffset + batLength + 5 * MiB;
        await file.TruncateAsync((long)(plan.Fixed ? dataOffset + plan.Size : dataOffset), ct).ConfigureAwait(false);
        // A regular file grows with zeroes (has_zero_init): a dynamic BAT of not-present entries needs no write.
        if (!plan.Fixed && !plan.ZeroBlocks && file.HasZeroInit) return;
        var state = plan.ZeroBlocks ? VhdxBlockState.Zero : plan.Fixed ? VhdxBlockState.FullyPresent : VhdxBlockState.NotPresent;
        ulong blocks = (plan.Size + plan.BlockSize - 1) / plan.BlockSize;
        // Written in pieces: a 64 TiB disk of 1 MiB blocks has a 512 MiB BAT.
        const int ChunkBytes = 4 << 20;
        var chunk = new byte[Math.Min(ChunkBytes, batLength)];
        ulong block = 0;
        for (ulong at = 0; at < batLength; at += (ulong)chunk.Length)
        {
            chunk.AsSpan().Clear();
            ulong firstIndex = at / 8, endIndex = firstIndex + (ulong)chunk.Length / 8;
            for (; block < blocks; block++)
            {
                ulong index = block + (block >> chunkRatioBits);
                if (index >= endIndex) break;
                ulong fileOffset = RoundUp(dataOffset + block * plan.BlockSize, MiB);
                BinaryPrimitives.WriteUInt64LittleEndian(chunk.AsSpan((int)((index - firstIndex) * 8)), VhdxBat.Make(state, fileOffset));
            }
            int length = (int)Math.Min((ulong)chunk.Length, batLength - at);
            await file.WriteAsync((long)(batOffset + at), chunk.AsMemory(0, length), WriteFlags.None, ct).ConfigureAwait(false);
        }
    }

    /// <summary>vhdx_create_new_metadata: the table (64 KiB) with five required entries, then their 40 bytes of items.</summary>
    private static async Task WriteMetadataAsync(BlockNode file, VhdxCreatePlan plan, long metadataOffset, CancellationToken ct)
    {
        const uint Required = VhdxMetadataEntry.IsRequired, Disk = VhdxMetadataEntry.IsRequired | VhdxMetadataEntry.IsVirtualDisk;
        var table = new byte[VhdxLayout.HeaderBlockSize];
        "metadata"u8.CopyTo(table);
        BinaryPrimitives.WriteUInt16LittleEndian(table.AsSpan(10), 5);
        (Guid Id, uint Length, uint Flags)[] items =
        [
            (VhdxLayout.FileParametersGuid, 8, Required),
            (VhdxLayout.VirtualSizeGuid, 8, Disk),
            (VhdxLayout.Page83Guid, 16, Disk),
            (VhdxLayout.LogicalSectorGuid, 4, Disk),
            (VhdxLayout.PhysicalSectorGuid, 4, Disk),
        ];
        uint offset = VhdxLayout.HeaderBlockSize;
        for (int i = 0; i < items.Length; i++)
        {
            new VhdxMetadataEntry(items[i].Id, offset, items[i].Length, items[i].Flags).Write(table.AsSpan(32 + i * 32));
            offset += items[i].Length;
        }
        var values = new byte[40];
        BinaryPrimitives.WriteUInt32LittleEndian(values, plan.BlockSize);
        // "Leave blocks allocated" marks a fixed disk.
        BinaryPrimitives.WriteUInt32LittleEndian(values.AsSpan(4), plan.Fixed ? 1u : 0u);
        BinaryPrimitives.WriteUInt64LittleEndian(values.AsSpan(8), plan.Size);
        Guid.NewGuid().TryWriteBytes(values.AsSpan(16, 16));
        BinaryPrimitives.WriteUInt32LittleEndian(values.AsSpan(32), 512);
        BinaryPrimitives.WriteUInt32LittleEndian(values.AsSpan(36), 512);
        await file.WriteAsync(metadataOffset, table, WriteFlags.None, ct).ConfigureAwait(false);
        await file.WriteAsync(metadataOffset + VhdxLayout.HeaderBlockSize, values, WriteFlags.None, ct).ConfigureAwait(false);
    }
}
