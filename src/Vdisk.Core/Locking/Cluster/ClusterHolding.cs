namespace Vdisk.Locking.Cluster;

/// <summary>
/// What one holder has under one cluster lock id, as read from etcd: who it is, which lock bytes
/// it has, and its fencing token (lease id and the revision at which it last acquired).
/// </summary>
/// <param name="LockId">The image's cluster-lock-id.</param>
/// <param name="Record">Host, PID, command, lease, file.</param>
/// <param name="Bytes">The lock bytes (100+i held, 200+i refused to share), ascending.</param>
/// <param name="Revision">The etcd revision of the holder's newest key: when it last took a lock byte.</param>
public sealed record ClusterHolding(string LockId, ClusterHolderRecord Record, IReadOnlyList<int> Bytes, long Revision)
{
    /// <summary>The fencing token: <c>LEASE-HEX@REVISION</c>. Of two holders, the one with the higher revision acquired later.</summary>
    public string FencingToken => $"{Record.LeaseHex}@{Revision.ToString(System.Globalization.CultureInfo.InvariantCulture)}";

    /// <summary>
    /// Groups the keys of one image (a range read of <see cref="ClusterKeys.Image"/>) into holders,
    /// in the order of their first acquisition. Keys that are not vdisk's, or whose value does not
    /// decode, are skipped.
    /// </summary>
    public static List<ClusterHolding> FromEntries(string keyPrefix, IEnumerable<StoreEntry> entries)
    {
        var byHolder = new Dictionary<(string LockId, string Holder), (ClusterHolderRecord Record, SortedSet<int> Bytes, long First, long Newest)>();
        foreach (var e in entries)
        {
            if (ClusterKeys.Parse(keyPrefix, e.Key) is not { } key) continue;
            if (byHolder.TryGetValue((key.LockId, key.Holder), out var h))
            {
                h.Bytes.Add(key.Offset);
                byHolder[(key.LockId, key.Holder)] = (h.Record, h.Bytes, Math.Min(h.First, e.CreateRevision), Math.Max(h.Newest, e.CreateRevision));
                continue;
            }
            if (ClusterHolderRecord.Decode(e.Value) is not { } record || record.Holder != key.Holder) continue;
            byHolder[(key.LockId, key.Holder)] = (record, new SortedSet<int> { key.Offset }, e.CreateRevision, e.CreateRevision);
        }
        return byHolder.OrderBy(kv => kv.Key.LockId, StringComparer.Ordinal).ThenBy(kv => kv.Value.First)
            .Select(kv => new ClusterHolding(kv.Key.LockId, kv.Value.Record, kv.Value.Bytes.ToList(), kv.Value.Newest)).ToList();
    }
}
