namespace Vdisk.Drivers.Qcow2;

/// <summary>qcow2_measure's arithmetic: how large a qcow2 image of a given size gets.</summary>
public static class Qcow2Measure
{
    /// <summary>qcow2_calc_prealloc_size: data plus header, L2 and L1 tables and refcount metadata.</summary>
    public static long PreallocSize(long alignedTotal, long clusterSize, int refcountOrder)
    {
        long meta = clusterSize;
        long l2e = alignedTotal / clusterSize;
        l2e = (l2e + clusterSize / 8 - 1) / (clusterSize / 8) * (clusterSize / 8);
        meta += l2e * 8;
        long l1e = l2e * 8 / clusterSize;
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
}
