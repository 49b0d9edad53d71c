using Etcdserverpb;
using Google.Protobuf;
using Grpc.Net.Client;
using Vdisk.Locking.Cluster;

namespace Vdisk.Interop.Cluster;

/// <summary>One change of a key in etcd's history.</summary>
public sealed record KeyEvent(long Revision, bool Put, string Key, long Lease)
{
    public (string LockId, int Offset, string Holder)? Parsed(string prefix) => ClusterKeys.Parse(prefix, Key);
}

/// <summary>
/// etcd's own history of a test's keys (a watch from a past revision replays every change in
/// order), so that a test can check a property at every revision there was, not at the moments it
/// happened to sample: "never two writers" holds for each state etcd ever had.
/// </summary>
public static class EtcdHistory
{
    /// <summary>The current revision of the cluster.</summary>
    public static long Revision(ClusterScope scope) =>
        scope.Store.ReadAsync(scope.Prefix + "\u0001none", CancellationToken.None).GetAwaiter().GetResult().Revision;

    /// <summary>Every change under the scope's prefix after <paramref name="fromRevision"/>, up to now.</summary>
    public static List<KeyEvent> Since(ClusterScope scope, long fromRevision)
    {
        // A marker written now ends the replay: everything before it has been seen once it arrives.
        string marker = scope.Prefix + "zz-history-marker/" + Guid.NewGuid().ToString("N");
        scope.Store.CommitAsync([new StoreWrite(marker, [1], 0)], null, CancellationToken.None).GetAwaiter().GetResult();
        using var channel = GrpcChannel.ForAddress(scope.Settings.Endpoints[0]);
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        using var call = new Watch.WatchClient(channel).Watch(cancellationToken: cts.Token);
        call.RequestStream.WriteAsync(new WatchRequest
        {
            CreateRequest = new WatchCreateRequest
            {
                Key = ByteString.CopyFromUtf8(scope.Prefix),
                RangeEnd = ByteString.CopyFrom(ClusterKeys.RangeEnd(scope.Prefix)),
                StartRevision = fromRevision + 1,
            },
        }).GetAwaiter().GetResult();
        var events = new List<KeyEvent>();
        while (call.ResponseStream.MoveNext(cts.Token).GetAwaiter().GetResult())
        {
            var response = call.ResponseStream.Current;
            if (response.CompactRevision > 0) throw new InvalidOperationException("history compacted");
            foreach (var e in response.Events)
            {
                string key = e.Kv.Key.ToStringUtf8();
                if (key == marker) return events;
                events.Add(new KeyEvent(e.Kv.ModRevision, e.Type == Mvccpb.Event.Types.EventType.Put, key, e.Kv.Lease));
            }
        }
        throw new InvalidOperationException("watch ended before the marker");
    }

    /// <summary>
    /// Replays <paramref name="events"/> over the keys that existed at their start (none, for a
    /// test's fresh prefix) and returns, for each revision, the holders that had a key of
    /// <paramref name="offset"/> under <paramref name="lockId"/>.
    /// </summary>
    public static List<(long Revision, HashSet<string> Holders)> HoldersOfByte(string prefix, IEnumerable<KeyEvent> events, string lockId, int offset)
    {
        var live = new HashSet<string>();
        var states = new List<(long, HashSet<string>)>();
        foreach (var group in events.GroupBy(e => e.Revision).OrderBy(g => g.Key))
        {
            foreach (var e in group)
            {
                if (e.Parsed(prefix) is not { } k || k.LockId != lockId || k.Offset != offset) continue;
                if (e.Put) live.Add(k.Holder);
                else live.Remove(k.Holder);
            }
            states.Add((group.Key, [.. live]));
        }
        return states;
    }
}
