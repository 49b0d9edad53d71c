using System.Buffers.Binary;
using Vdisk.Drivers.Qcow2;
using Vdisk.Graph;
using Vdisk.Permissions;
using Xunit;

namespace Vdisk.Tests.Qcow2;

/// <summary>
/// Persistent dirty bitmaps: the sparse bitmap, the bitmap directory's layout and QEMU's checks
/// on it, the size arithmetic of qemu-img measure, and a qcow2 image keeping its bitmaps across
/// a close (in use while open, stored on close).
/// </summary>
public sealed class Qcow2BitmapTests : IDisposable
{
    private const int Cluster = 65536;
    private readonly ScratchImages _images = new("vdisk-bitmaps-");

    public void Dispose() => _images.Dispose();

    [Fact]
    public void Set_ranges_mark_whole_granules_and_join_into_runs()
    {
        var bitmap = new DirtyBitmap("b", granularityBits: 16, diskLength: 10 << 20, chunkBytes: 512);
        bitmap.SetRange(65536 + 100, 1);
        bitmap.SetRange(3 << 20, 1 << 20);
        bitmap.SetRange((4 << 20) - 1, 2); // touches the granule after the run too
        Assert.True(bitmap.IsDirty(65536));
        Assert.False(bitmap.IsDirty(0));
        Assert.Equal([(65536L, 65536L), (3L << 20, (1L << 20) + 65536)], bitmap.DirtyRanges().ToList());
        bitmap.Clear();
        Assert.Empty(bitmap.DirtyRanges());
    }

    [Fact]
    public void Bits_span_chunks_and_the_last_granule_is_clipped_to_the_disk()
    {
        // 512-byte granules, 8-byte chunks: 64 granules (32 KiB of disk) per chunk.
        var bitmap = new DirtyBitmap("b", granularityBits: 9, diskLength: 100_000, chunkBytes: 8);
        bitmap.SetRange(30_000, 70_000);
        Assert.Equal([(29_696L, 100_000L - 29_696)], bitmap.DirtyRanges().ToList());
        Assert.Equal(196, bitmap.BitCount);
        Assert.Equal(25, bitmap.ByteCount);
        Assert.Equal(4, bitmap.ChunkCount);
        // Chunk 0 holds granules 0..63: 58..63 are set, bits 2..7 of its last byte.
        Assert.Equal(new byte[] { 0, 0, 0, 0, 0, 0, 0, 0xfc }, bitmap.GetChunk(0));
    }

    [Fact]
    public void Merge_sets_the_source_granules_at_the_target_granularity()
    {
        var fine = new DirtyBitmap("fine", 16, 10 << 20, 512);
        fine.SetRange(1 << 20, 1);
        var coarse = new DirtyBitmap("coarse", 19, 10 << 20, 512);
        coarse.MergeFrom(fine);
        Assert.Equal([(1L << 20, 1L << 19)], coarse.DirtyRanges().ToList());
        var other = new DirtyBitmap("other", 16, 20 << 20, 512);
        var e = Assert.Throws<InvalidOperationException>(() => other.MergeFrom(fine));
        Assert.Equal("Bitmaps are of different sizes (destination size is 20971520, source size is 10485760) and can't be merged", e.Message);
    }

    [Fact]
    public void Directory_round_trips_with_eight_byte_aligned_entries()
    {
        var entries = new List<Qcow2BitmapEntry>
        {
            new(0x50000, 1, Qcow2BitmapDirectory.FlagAuto, 16, "b0"),
            new(0x60000, 1, Qcow2BitmapDirectory.FlagInUse, 19, "a-longer-name"),
        };
        var bytes = Qcow2BitmapDirectory.Serialize(entries);
        Assert.Equal(32 + 40, bytes.Length);
        Assert.Equal(1, bytes[16]); // type: dirty tracking
        Assert.Equal(entries, Qcow2BitmapDirectory.Parse(bytes, 2, Cluster, 10 << 20));
    }

    [Theory]
    [InlineData(1u, "More bitmaps found than specified in header extension")]
    [InlineData(3u, "Less bitmaps found than specified in header extension")]
    public void Directory_count_must_match_the_header(uint count, string message)
    {
        var bytes = Qcow2BitmapDirectory.Serialize([new(0x50000, 1, 0, 16, "a"), new(0x60000, 1, 0, 16, "b")]);
        Assert.Equal(message, Assert.Throws<Qcow2FormatException>(() => Qcow2BitmapDirectory.Parse(bytes, count, Cluster, 10 << 20)).Message);
    }

    [Fact]
    public void Entries_outside_qemus_constraints_are_refused_by_name()
    {
        var granularityTooSmall = Qcow2BitmapDirectory.Serialize([new(0x50000, 1, 0, 8, "small")]);
        Assert.Equal("Bitmap 'small' doesn't satisfy the constraints",
            Assert.Throws<Qcow2FormatException>(() => Qcow2BitmapDirectory.Parse(granularityTooSmall, 1, Cluster, 10 << 20)).Message);
        // One cluster of bits covers 512 Ki granules of 512 bytes: 256 MiB, less than the disk.
        var tableTooSmall = Qcow2BitmapDirectory.Serialize([new(0x50000, 1, 0, 9, "short")]);
        Assert.Single(Qcow2BitmapDirectory.Parse(tableTooSmall, 1, Cluster, 256 << 20));
        Assert.Throws<Qcow2FormatException>(() => Qcow2BitmapDirectory.Parse(tableTooSmall, 1, Cluster, (256 << 20) + 1));
        // ...which an in-use bitmap may be (stale since a resize).
        var inUse = Qcow2BitmapDirectory.Serialize([new(0x50000, 1, Qcow2BitmapDirectory.FlagInUse, 9, "short")]);
        Assert.Single(Qcow2BitmapDirectory.Parse(inUse, 1, Cluster, 512 << 20));
        var unaligned = Qcow2BitmapDirectory.Serialize([new(0x50200, 1, 0, 16, "odd")]);
        Assert.Throws<Qcow2FormatException>(() => Qcow2BitmapDirectory.Parse(unaligned, 1, Cluster, 10 << 20));
    }

    [Fact]
    public void Extra_data_and_truncated_entries_are_refused()
    {
        var bytes = Qcow2BitmapDirectory.Serialize([new(0x50000, 1, 0, 16, "b0")]);
        var withExtra = bytes.Concat(new byte[8]).ToArray();
        BinaryPrimitives.WriteUInt32BigEndian(withExtra.AsSpan(20), 8);
        Assert.Equal("Bitmap extra data is not supported",
            Assert.Throws<Qcow2FormatException>(() => Qcow2BitmapDirectory.Parse(withExtra, 1, Cluster, 10 << 20)).Message);
        Assert.Equal("Broken bitmap directory",
            Assert.Throws<Qcow2FormatException>(() => Qcow2BitmapDirectory.Parse(bytes.AsSpan(0, 20), 1, Cluster, 10 << 20)).Message);
        Assert.Equal("Requested bitmap directory size is zero",
            Assert.Throws<Qcow2FormatException>(() => Qcow2BitmapDirectory.Parse([], 1, Cluster, 10 << 20)).Message);
    }

    [Fact]
    public void Measure_counts_all_clusters_tables_and_the_directory_as_iotest_190()
    {
        const long TwoTiB = 2L << 40;
        (string, long)[] bitmaps = [("b1", 512), ("b2", 2 << 20)];
        Assert.Equal(537198592, Qcow2BitmapDirectory.MeasureBytes(bitmaps, TwoTiB, 64 << 10));
        Assert.Equal(545259520, Qcow2BitmapDirectory.MeasureBytes(bitmaps, TwoTiB, 2 << 20));
        Assert.Equal(0, Qcow2BitmapDirectory.MeasureBytes([], TwoTiB, 64 << 10));
    }

    [Theory]
    [InlineData(256L, "Granularity is under minimum (512 bytes)")]
    [InlineData(1L << 32, "Granularity exceeds maximum (2147483648 bytes)")]
    [InlineData(512L, "Too much space will be occupied by the bitmap. Use larger granularity")]
    [InlineData(65536L, null)]
    public void New_bitmap_constraints_match_qemu(long granularity, string? expected) =>
        Assert.Equal(expected, Qcow2BitmapDirectory.CheckNewBitmap("b", granularity, 4L << 40, Cluster));

    private Task<string> CreateAsync(string name = "disk.qcow2") => _images.CreateAsync(name, "qcow2", "10M");

    private static byte[] Pattern(int length) => Enumerable.Repeat((byte)0x5a, length).ToArray();

    /// <summary>The flags of the bitmaps in the directory the header points at now.</summary>
    private static List<uint> StoredFlags(string path)
    {
        using var f = File.Open(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        var cluster0 = new byte[Cluster];
        f.ReadExactly(cluster0);
        var header = Qcow2Header.Parse(cluster0);
        if (header.Bitmaps is not { } ext) return [];
        var dir = new byte[ext.DirectorySize];
        f.Position = (long)ext.DirectoryOffset;
        f.ReadExactly(dir);
        return Qcow2BitmapDirectory.Parse(dir, ext.Count, Cluster, 10 << 20).Select(e => e.Flags).ToList();
    }

    [Fact]
    public async Task Writes_dirty_enabled_bitmaps_which_survive_close_and_are_in_use_while_open()
    {
        string path = await CreateAsync();
        await using (var image = DiskImage.Open(ImageSource.FromFile(path, "qcow2"), OpenFlags.ReadWrite))
        {
            image.Root.AddPersistentBitmap("on", 65536, disabled: false);
            image.Root.AddPersistentBitmap("off", 65536, disabled: true);
            await image.WriteAsync(1 << 20, Pattern(4096));
        }
        Assert.Equal([Qcow2BitmapDirectory.FlagAuto, 0u], StoredFlags(path).Order().Reverse().ToList());

        await using (var image = DiskImage.Open(ImageSource.FromFile(path, "qcow2"), OpenFlags.ReadWrite))
        {
            // Open read-write: every bitmap is marked in use on disk until it is stored again.
            Assert.All(StoredFlags(path), f => Assert.Equal(Qcow2BitmapDirectory.FlagInUse, f & Qcow2BitmapDirectory.FlagInUse));
            await image.WriteZeroesAsync(3 << 20, 65536);
        }
        await using var reopened = DiskImage.Open(ImageSource.FromFile(path, "qcow2"), OpenFlags.None);
        var on = reopened.Root.DirtyBitmaps.Single(b => b.Name == "on");
        var off = reopened.Root.DirtyBitmaps.Single(b => b.Name == "off");
        Assert.Equal([(1L << 20, 65536L), (3L << 20, 65536L)], on.DirtyRanges().ToList());
        Assert.Empty(off.DirtyRanges());
        Assert.False(off.Enabled);
        Assert.False(on.Inconsistent);
        var check = await reopened.Root.CheckAsync(RepairMode.None, null);
        Assert.Equal(0, check.Corruptions + check.Leaks + check.CheckErrors);
    }

    [Fact]
    public async Task A_read_only_node_reopened_read_write_marks_its_bitmaps_in_use_before_the_first_write_and_stores_them()
    {
        string path = await CreateAsync();
        await using (var image = DiskImage.Open(ImageSource.FromFile(path, "qcow2"), OpenFlags.ReadWrite))
            image.Root.AddPersistentBitmap("b", 65536, disabled: false);
        await using (var image = DiskImage.Open(ImageSource.FromFile(path, "qcow2"), OpenFlags.None))
        {
            Assert.Equal([Qcow2BitmapDirectory.FlagAuto], StoredFlags(path));
            Reopen.SetReadOnly(image.Root, readOnly: false);
            await image.Root.WriteAsync(2 << 20, Pattern(512));
            Assert.Equal([Qcow2BitmapDirectory.FlagAuto | Qcow2BitmapDirectory.FlagInUse], StoredFlags(path));
        }
        Assert.Equal([Qcow2BitmapDirectory.FlagAuto], StoredFlags(path));
        await using var reopened = DiskImage.Open(ImageSource.FromFile(path, "qcow2"), OpenFlags.None);
        Assert.Equal([(2L << 20, 65536L)], reopened.Root.DirtyBitmaps.Single().DirtyRanges().ToList());
    }

    [Fact]
    public async Task Removing_every_bitmap_drops_the_extension_and_frees_its_clusters()
    {
        string path = await CreateAsync();
        await using (var image = DiskImage.Open(ImageSource.FromFile(path, "qcow2"), OpenFlags.ReadWrite))
        {
            image.Root.AddPersistentBitmap("b", 65536, disabled: false);
            await image.WriteAsync(0, Pattern(65536));
        }
        Assert.Single(StoredFlags(path));
        await using (var image = DiskImage.Open(ImageSource.FromFile(path, "qcow2"), OpenFlags.ReadWrite))
            image.Root.RemovePersistentBitmap(image.Root.DirtyBitmaps.Single());
        Assert.Empty(StoredFlags(path));
        await using var reopened = DiskImage.Open(ImageSource.FromFile(path, "qcow2"), OpenFlags.None);
        Assert.Empty(reopened.Root.DirtyBitmaps);
        var check = await reopened.Root.CheckAsync(RepairMode.None, null);
        Assert.Equal(0, check.Corruptions + check.Leaks + check.CheckErrors);
    }
}
