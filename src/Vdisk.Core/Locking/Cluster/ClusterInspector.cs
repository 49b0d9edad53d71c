using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using Vdisk.Inspection;
using Vdisk.Permissions;

namespace Vdisk.Locking.Cluster;

/// <summary>
/// What etcd holds for one cluster-lock-id: the holders on every host, the time their leases
/// have left, and verdicts computed by the same code as for local holders.
/// </summary>
public sealed class ClusterImageLocks
{
    /// <summary>Creates the report of one id.</summary>
    public ClusterImageLocks(string lockId, IReadOnlyList<LockHolder> holders, IReadOnlyDictionary<long, long> leaseSeconds)
    {
        LockId = lockId;
        Holders = holders;
        LeaseSeconds = leaseSeconds;
    }

    /// <summary>The cluster-lock-id.</summary>
    public string LockId { get; }

    /// <summary>The holders (kind <see cref="LockHolderKind.Cluster"/>), first acquired first.</summary>
    public IReadOnlyList<LockHolder> Holders { get; }

    /// <summary>Seconds each holder lease has left (-1: expired since the keys were read).</summary>
    public IReadOnlyDictionary<long, long> LeaseSeconds { get; }

    /// <summary>Would an open in <paramref name="mode"/> on a <paramref name="format"/> image get past these holders?</summary>
    public LockVerdict Verdict(AccessMode mode, string format) => Verdict(AccessModes.FileRequest(mode, format));

    /// <summary>Would an open with <paramref name="request"/> on the image file get past these holders?</summary>
    public LockVerdict Verdict(PermissionPair request) => LockVerdict.Evaluate(Holders, request);
}

/// <summary>
/// Reads cluster locks for <c>vdisk locks --cluster</c>: one linearizable range read (of the
/// ids asked for, or of every id), then the remaining TTL of each lease seen. Takes no lease.
/// </summary>
public sealed class ClusterInspector(IClusterStore store, string keyPrefix)
{
    /// <summary>The ids given (each reported, held or not), or every id with holders when none is given.</summary>
    public IReadOnlyList<ClusterImageLocks> Inspect(IReadOnlyList<string> lockIds, CancellationToken cancellationToken = default)
    {
        foreach (var id in lockIds) ClusterLockSettings.ValidateLockId(id);
        var entries = new List<StoreEntry>();
        if (lockIds.Count == 0)
        {
            entries.AddRange(store.ReadAsync(ClusterKeys.AllImages(keyPrefix), cancellationToken).GetAwaiter().GetResult().Entries);
        }
        else
        {
            foreach (var id in lockIds.Distinct())
                entries.AddRange(store.ReadAsync(ClusterKeys.Image(keyPrefix, id), cancellationToken).GetAwaiter().GetResult().Entries);
        }
        var holdings = ClusterHolding.FromEntries(keyPrefix, entries);
        var leases = new Dictionary<long, long>();
        foreach (long lease in holdings.Select(h => h.Record.Lease).Distinct())
            leases[lease] = store.LeaseTimeToLiveAsync(lease, cancellationToken).GetAwaiter().GetResult();
        var ids = lockIds.Count > 0 ? lockIds.Distinct() : holdings.Select(h => h.LockId).Distinct();
        return ids.Select(id => new ClusterImageLocks(id,
            holdings.Where(h => h.LockId == id).Select(h => new LockHolder(h)).ToList(), leases)).ToList();
    }
}

/// <summary>
/// The JSON form of <c>vdisk locks --cluster --output json</c>:
/// <c>{"format", "modes": [...], "endpoints": [...], "prefix", "images": [{"lock-id", "holders": [HOLDER...],
/// "verdicts": [VERDICT...]}]}</c>. A HOLDER is <c>{"host", "pid", "command", "lease", "revision",
/// "fencing-token", "ttl", "file", "node", "file-id", "device-id", "bytes": [...], "holds": [...],
/// "refuses": [...]}</c>; a VERDICT is as for local locks, its blockers <c>{"holder", "host", "pid"}</c>.
/// </summary>
public static class ClusterReportJson
{
    /// <summary>The whole report as indented JSON text.</summary>
    public static string ToJson(IReadOnlyList<ClusterImageLocks> images, IReadOnlyList<AccessMode> modes, string format, ClusterLockSettings settings)
    {
        using var stream = new MemoryStream();
        using (var w = new Utf8JsonWriter(stream, LockReportJson.WriterOptions))
        {
            w.WriteStartObject();
            w.WriteString("format", format);
            LockReportJson.WriteModes(w, modes, format);
            w.WriteStartArray("endpoints");
            foreach (var e in settings.Endpoints) w.WriteStringValue(e.GetLeftPart(UriPartial.Authority));
            w.WriteEndArray();
            w.WriteString("prefix", settings.KeyPrefix);
            w.WriteStartArray("images");
            foreach (var image in images) WriteImage(w, image, modes, format);
            w.WriteEndArray();
            w.WriteEndObject();
        }
        return Encoding.UTF8.GetString(stream.ToArray());
    }

    private static void WriteImage(Utf8JsonWriter w, ClusterImageLocks image, IReadOnlyList<AccessMode> modes, string format)
    {
        w.WriteStartObject();
        w.WriteString("lock-id", image.LockId);
        w.WriteStartArray("holders");
        foreach (var h in image.Holders)
        {
            var c = h.Cluster!;
            var r = c.Record;
            w.WriteStartObject();
            w.WriteString("host", r.Host);
            w.WriteNumber("pid", r.Pid);
            w.WriteString("command", r.Command);
            w.WriteString("lease", r.LeaseHex);
            w.WriteNumber("revision", c.Revision);
            w.WriteString("fencing-token", c.FencingToken);
            LockReportJson.WriteNullableNumber(w, "ttl", image.LeaseSeconds.TryGetValue(r.Lease, out long ttl) && ttl >= 0 ? ttl : null);
            w.WriteString("file", r.File);
            w.WriteString("node", r.Node);
            w.WriteString("file-id", r.FileId);
            w.WriteString("device-id", r.DeviceId);
            w.WriteStartArray("bytes");
            foreach (int b in c.Bytes) w.WriteNumberValue(b);
            w.WriteEndArray();
            LockReportJson.WritePermissions(w, "holds", h.Holds);
            LockReportJson.WritePermissions(w, "refuses", h.Refuses);
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteStartArray("verdicts");
        foreach (var mode in modes)
        {
            var v = image.Verdict(mode, format);
            w.WriteStartObject();
            w.WriteString("mode", AccessModes.Name(mode));
            w.WriteBoolean("admitted", v.Admitted);
            w.WriteString("error", v.Error);
            LockReportJson.WriteNullableNumber(w, "byte", v.Offset);
            w.WriteStartArray("blockers");
            foreach (var b in v.Blockers)
            {
                w.WriteStartObject();
                w.WriteNumber("holder", IndexOf(image.Holders, b));
                w.WriteString("host", b.Cluster!.Record.Host);
                w.WriteNumber("pid", b.Cluster.Record.Pid);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteString("reason", v.Admitted ? null : v.Reason);
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteEndObject();
    }

    private static int IndexOf(IReadOnlyList<LockHolder> holders, LockHolder h)
    {
        for (int i = 0; i < holders.Count; i++)
            if (ReferenceEquals(holders[i], h)) return i;
        return -1;
    }
}
