namespace Vdisk.Permissions;

/// <summary>
/// QEMU's block permission bits (BLK_PERM_*). Bit <c>i</c> maps to lock byte <c>100+i</c>
/// ("holds") and <c>200+i</c> ("does not share").
/// </summary>
[Flags]
public enum BlockPermission
{
    /// <summary>No permission.</summary>
    None = 0,
    /// <summary>Reads return consistent data (BLK_PERM_CONSISTENT_READ).</summary>
    ConsistentRead = 0x01,
    /// <summary>Guest-visible writes (BLK_PERM_WRITE).</summary>
    Write = 0x02,
    /// <summary>Writes that do not change guest-visible data (BLK_PERM_WRITE_UNCHANGED).</summary>
    WriteUnchanged = 0x04,
    /// <summary>Changing the size (BLK_PERM_RESIZE).</summary>
    Resize = 0x08,
    /// <summary>Every permission current QEMU (7.0 and later) knows (BLK_PERM_ALL).</summary>
    All = 0x0f,
}

/// <summary>Names and constants of the permission bits, as QEMU prints them.</summary>
public static class BlockPermissions
{
    /// <summary>The number of permission bits QEMU 7.0+ locks (bytes 100..103 and 200..203).</summary>
    public const int BitCount = 4;

    /// <summary>DEFAULT_PERM_PASSTHROUGH: what filters and formats pass down to their children.</summary>
    public const BlockPermission Passthrough =
        BlockPermission.ConsistentRead | BlockPermission.Write | BlockPermission.WriteUnchanged | BlockPermission.Resize;

    /// <summary>DEFAULT_PERM_UNCHANGED: ALL minus PASSTHROUGH, empty since QEMU 7.0.</summary>
    public const BlockPermission Unchanged = BlockPermission.All & ~Passthrough;

    /// <summary>The permission for bit <paramref name="bit"/> (0..3).</summary>
    public static BlockPermission FromBit(int bit) => (BlockPermission)(1 << bit);

    /// <summary>The name QEMU uses in messages (<c>bdrv_perm_names</c>): "consistent read", "write", ...</summary>
    public static string Name(BlockPermission single) => single switch
    {
        BlockPermission.ConsistentRead => "consistent read",
        BlockPermission.Write => "write",
        BlockPermission.WriteUnchanged => "write unchanged",
        BlockPermission.Resize => "resize",
        _ => Describe(single),
    };

    /// <summary>The QAPI name (<c>BlockPermission</c> enum): "consistent-read", "write", ...</summary>
    public static string QapiName(BlockPermission single) => single switch
    {
        BlockPermission.ConsistentRead => "consistent-read",
        BlockPermission.Write => "write",
        BlockPermission.WriteUnchanged => "write-unchanged",
        BlockPermission.Resize => "resize",
        _ => throw new ArgumentOutOfRangeException(nameof(single), single, "not a single permission bit"),
    };

    /// <summary>Set bits joined with ", ", as <c>bdrv_perm_names</c> does; "" for none.</summary>
    public static string Describe(BlockPermission perms)
    {
        var names = new List<string>(BitCount);
        for (int i = 0; i < BitCount; i++)
        {
            var bit = FromBit(i);
            if ((perms & bit) != 0) names.Add(Name(bit));
        }
        return string.Join(", ", names);
    }

    /// <summary>The single bits set in <paramref name="perms"/>, in ascending order.</summary>
    public static PermissionBits Bits(BlockPermission perms) => new(perms);
}

/// <summary>
/// The single bits of a permission set, in ascending order. <c>foreach</c> over it uses the struct
/// enumerator: no allocation and no interface call, which every lock transaction would otherwise
/// pay (a first interface call costs a dispatch-cell resolution and a written page at start-up).
/// </summary>
public readonly struct PermissionBits(BlockPermission set) : IEnumerable<BlockPermission>
{
    /// <summary>The enumerator <c>foreach</c> uses.</summary>
    public Enumerator GetEnumerator() => new(set);

    IEnumerator<BlockPermission> IEnumerable<BlockPermission>.GetEnumerator() => GetEnumerator();

    System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();

    /// <summary>Walks the bits 0..<see cref="BlockPermissions.BitCount"/>-1 that are set.</summary>
    public struct Enumerator(BlockPermission set) : IEnumerator<BlockPermission>
    {
        private int _bit = -1;

        /// <summary>The current single bit.</summary>
        public readonly BlockPermission Current => BlockPermissions.FromBit(_bit);

        readonly object System.Collections.IEnumerator.Current => Current;

        /// <summary>Moves to the next set bit.</summary>
        public bool MoveNext()
        {
            while (++_bit < BlockPermissions.BitCount)
                if ((set & BlockPermissions.FromBit(_bit)) != 0) return true;
            return false;
        }

        /// <summary>Starts over.</summary>
        public void Reset() => _bit = -1;

        /// <summary>Nothing to release.</summary>
        public readonly void Dispose() { }
    }
}

/// <summary>A permission request: what a user holds and what it lets others hold.</summary>
/// <param name="Perm">Permissions taken (locks bytes 100+i).</param>
/// <param name="Shared">Permissions others may take (bits not here lock bytes 200+i).</param>
public readonly record struct PermissionPair(BlockPermission Perm, BlockPermission Shared)
{
    /// <summary>Holds nothing, shares everything: the state of a node nobody uses.</summary>
    public static PermissionPair Unused => new(BlockPermission.None, BlockPermission.All);

    /// <summary>The bits this request refuses to share.</summary>
    public BlockPermission Unshared => ~Shared & BlockPermission.All;

    /// <inheritdoc />
    public override string ToString() =>
        $"perm=[{BlockPermissions.Describe(Perm)}] shared=[{BlockPermissions.Describe(Shared)}]";
}
