using System.Buffers.Binary;
using System.Text;

namespace Vdisk.TestSupport;

/// <summary>
/// Builds Bochs "growing" redolog images byte by byte (no tool here writes them: QEMU only reads
/// the format and bximage is not packaged), with the guest content they must read as. Extents are
/// placed in the file in the order of <see cref="Slots"/>, each a sector bitmap then the data;
/// a sector reads as data only when its extent is placed and its bit is set.
/// </summary>
internal sealed class BochsImage
{
    /// <summary>0x00020000 (disk size at 0x58) or 0x00010000 (at 0x54).</summary>
    public uint Version { get; init; } = 0x00020000;

    /// <summary>Bytes per extent (a power of two, 512 to 8 MiB for QEMU to open it).</summary>
    public uint ExtentSize { get; init; } = 4096;

    /// <summary>Bytes of each extent's bitmap.</summary>
    public uint BitmapSize { get; init; } = 512;

    /// <summary>Disk size in bytes.</summary>
    public ulong DiskSize { get; init; }

    /// <summary>Catalog entries (at least enough for the disk).</summary>
    public uint CatalogEntries { get; init; }

    /// <summary>Extent indexes in the order their data is placed in the file; extents not listed are unwritten.</summary>
    public IReadOnlyList<int> Slots { get; init; } = [];

    /// <summary>Whether sector <c>s</c> of extent <c>e</c> is marked written (only for placed extents).</summary>
    public Func<int, int, bool> Written { get; init; } = (_, _) => true;

    /// <summary>Label of the deterministic data written into the sectors.</summary>
    public string DataLabel { get; init; } = "bochs";

    /// <summary>The image file and the guest bytes it holds.</summary>
    public (byte[] File, byte[] Guest) Build()
    {
        int sectorsPerExtent = (int)(ExtentSize / 512);
        int bitmapBytes = (int)((BitmapSize + 511) / 512 * 512);
        int slotBytes = bitmapBytes + (int)ExtentSize;
        int dataOffset = 512 + (int)CatalogEntries * 4;
        var file = new byte[dataOffset + Slots.Count * slotBytes];
        var guest = new byte[DiskSize];
        var data = DeterministicData.Bytes(Slots.Count * (int)ExtentSize, DataLabel);

        Encoding.ASCII.GetBytes("Bochs Virtual HD Image").CopyTo(file, 0);
        Encoding.ASCII.GetBytes("Redolog").CopyTo(file, 32);
        Encoding.ASCII.GetBytes("Growing").CopyTo(file, 48);
        BinaryPrimitives.WriteUInt32LittleEndian(file.AsSpan(0x40), Version);
        BinaryPrimitives.WriteUInt32LittleEndian(file.AsSpan(0x44), 512);
        BinaryPrimitives.WriteUInt32LittleEndian(file.AsSpan(0x48), CatalogEntries);
        BinaryPrimitives.WriteUInt32LittleEndian(file.AsSpan(0x4c), BitmapSize);
        BinaryPrimitives.WriteUInt32LittleEndian(file.AsSpan(0x50), ExtentSize);
        BinaryPrimitives.WriteUInt64LittleEndian(file.AsSpan(Version == 0x00010000 ? 0x54 : 0x58), DiskSize);

        for (int e = 0; e < CatalogEntries; e++)
            BinaryPrimitives.WriteUInt32LittleEndian(file.AsSpan(512 + e * 4), 0xffffffff);
        for (int slot = 0; slot < Slots.Count; slot++)
        {
            int extent = Slots[slot];
            BinaryPrimitives.WriteUInt32LittleEndian(file.AsSpan(512 + extent * 4), (uint)slot);
            int at = dataOffset + slot * slotBytes;
            data.AsSpan(slot * (int)ExtentSize, (int)ExtentSize).CopyTo(file.AsSpan(at + bitmapBytes));
            for (int s = 0; s < sectorsPerExtent; s++)
            {
                if (!Written(extent, s)) continue;
                file[at + s / 8] |= (byte)(1 << (s % 8));
                long guestAt = (long)extent * ExtentSize + s * 512L;
                if (guestAt < guest.Length)
                    file.AsSpan(at + bitmapBytes + s * 512, (int)Math.Min(512, guest.Length - guestAt)).CopyTo(guest.AsSpan((int)guestAt));
            }
        }
        return (file, guest);
    }
}
