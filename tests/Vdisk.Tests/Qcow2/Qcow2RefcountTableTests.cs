using System.Buffers.Binary;
using Vdisk.Drivers.Qcow2;
using Vdisk.Tests.Copy;
using Xunit;

namespace Vdisk.Tests.Qcow2;

/// <summary>
/// The used part of the refcount table, which every write's overlap check walks: it must cover
/// each block entered since the image was opened, or a write onto that block would go unchecked.
/// </summary>
public class Qcow2RefcountTableTests
{
    // 512-byte clusters with 16-bit refcounts: one block counts 256 clusters.
    private static readonly Qcow2Geometry Geometry = new(9, 4);

    /// <summary>Cluster 0 the header, 1 the table (64 entries), 2 the first block, which counts all three.</summary>
    private static async Task<Qcow2Refcounts> OpenAsync(MemoryNode file)
    {
        var block = new byte[512];
        for (int cluster = 0; cluster < 3; cluster++) BinaryPrimitives.WriteUInt16BigEndian(block.AsSpan(cluster * 2), 1);
        await file.WriteAsync(1024, block);
        var table = new ulong[64];
        table[0] = 1024;
        await file.WriteAsync(512, Qcow2Node.SerializeTable(table, table.Length));
        return new Qcow2Refcounts(file, Geometry, table, 512, 1, 4, 3, () => ValueTask.CompletedTask);
    }

    [Fact]
    public async Task Blocks_entered_after_opening_are_in_the_used_table()
    {
        var refcounts = await OpenAsync(new MemoryNode("img", 1 << 20));
        Assert.Equal([1024UL], refcounts.UsedTable.ToArray());

        // 600 more clusters need blocks for table entries 1 and 2.
        await refcounts.AllocateAsync(600);
        Assert.Equal(3, refcounts.UsedTable.Length);
        Assert.All(refcounts.UsedTable.ToArray(), entry => Assert.NotEqual(0UL, entry));
        Assert.Equal(refcounts.Table[..3].ToArray(), refcounts.UsedTable.ToArray());
        Assert.All(refcounts.Table[3..].ToArray(), entry => Assert.Equal(0UL, entry));
    }

    [Fact]
    public async Task A_replaced_table_is_counted_up_to_its_last_block()
    {
        var refcounts = await OpenAsync(new MemoryNode("img", 1 << 20));
        var rebuilt = new ulong[64];
        rebuilt[0] = 1024;
        rebuilt[5] = 4096;  // a gap is still walked: the overlap check reads every entry before the last
        refcounts.ReplaceTable(rebuilt, 512, 1, 16);
        Assert.Equal(6, refcounts.UsedTable.Length);

        refcounts.StartOver(new ulong[64], 512, 1);
        Assert.Equal(0, refcounts.UsedTable.Length);
        refcounts.EnterBlock(0, 1024);
        Assert.Equal([1024UL], refcounts.UsedTable.ToArray());
    }
}
