namespace Vdisk.Graph;

/// <summary>
/// QEMU's BlkdebugEvent (qapi/block-core.json, 7.2): the points inside the block layer and the
/// format drivers where a <c>blkdebug</c> node below can inject errors, change state or suspend a
/// request. Formats emit them on their file child (<see cref="BlockNode.DebugEventAsync"/>).
/// </summary>
public enum BlkdebugEvent
{
#pragma warning disable CS1591 // the QAPI names below say what each is
    L1Update,
    L1GrowAllocTable,
    L1GrowWriteTable,
    L1GrowActivateTable,
    L2Load,
    L2Update,
    L2UpdateCompressed,
    L2AllocCowRead,
    L2AllocWrite,
    ReadAio,
    ReadBackingAio,
    ReadCompressed,
    WriteAio,
    WriteCompressed,
    VmstateLoad,
    VmstateSave,
    CowRead,
    CowWrite,
    ReftableLoad,
    ReftableGrow,
    ReftableUpdate,
    RefblockLoad,
    RefblockUpdate,
    RefblockUpdatePart,
    RefblockAlloc,
    RefblockAllocHookup,
    RefblockAllocWrite,
    RefblockAllocWriteBlocks,
    RefblockAllocWriteTable,
    RefblockAllocSwitchTable,
    ClusterAlloc,
    ClusterAllocBytes,
    ClusterFree,
    FlushToOs,
    FlushToDisk,
    PwritevRmwHead,
    PwritevRmwAfterHead,
    PwritevRmwTail,
    PwritevRmwAfterTail,
    Pwritev,
    PwritevZero,
    PwritevDone,
    EmptyImagePrepare,
    L1ShrinkWriteTable,
    L1ShrinkFreeL2Clusters,
    CorWrite,
    ClusterAllocSpace,
    None,
#pragma warning restore CS1591
}

/// <summary>The QAPI spellings of <see cref="BlkdebugEvent"/>.</summary>
public static class BlkdebugEvents
{
    private static readonly string[] s_names =
    [
        "l1_update", "l1_grow_alloc_table", "l1_grow_write_table", "l1_grow_activate_table",
        "l2_load", "l2_update", "l2_update_compressed", "l2_alloc_cow_read", "l2_alloc_write",
        "read_aio", "read_backing_aio", "read_compressed", "write_aio", "write_compressed",
        "vmstate_load", "vmstate_save", "cow_read", "cow_write",
        "reftable_load", "reftable_grow", "reftable_update",
        "refblock_load", "refblock_update", "refblock_update_part", "refblock_alloc",
        "refblock_alloc_hookup", "refblock_alloc_write", "refblock_alloc_write_blocks",
        "refblock_alloc_write_table", "refblock_alloc_switch_table",
        "cluster_alloc", "cluster_alloc_bytes", "cluster_free", "flush_to_os", "flush_to_disk",
        "pwritev_rmw_head", "pwritev_rmw_after_head", "pwritev_rmw_tail", "pwritev_rmw_after_tail",
        "pwritev", "pwritev_zero", "pwritev_done", "empty_image_prepare",
        "l1_shrink_write_table", "l1_shrink_free_l2_clusters", "cor_write", "cluster_alloc_space", "none",
    ];

    /// <summary>Number of events.</summary>
    public static int Count => s_names.Length;

    /// <summary>The event's QAPI name.</summary>
    public static string Name(BlkdebugEvent e) => s_names[(int)e];

    /// <summary>qapi_enum_parse over BlkdebugEvent: the event named <paramref name="name"/>, or null.</summary>
    public static BlkdebugEvent? Parse(string name)
    {
        int i = Array.IndexOf(s_names, name);
        return i < 0 ? null : (BlkdebugEvent)i;
    }
}
