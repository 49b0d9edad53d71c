using System.Text.Json;

namespace Vdisk.Locking.Cluster.Agent;

/// <summary>The operations of <see cref="IClusterStore"/> as the etcd helper receives them, and a cancellation.</summary>
public enum AgentOperation
{
    /// <summary><see cref="IClusterStore.GrantLeaseAsync"/>.</summary>
    Grant,
    /// <summary><see cref="IClusterStore.KeepAliveAsync"/>.</summary>
    KeepAlive,
    /// <summary><see cref="IClusterStore.RevokeLeaseAsync"/>.</summary>
    Revoke,
    /// <summary><see cref="IClusterStore.LeaseTimeToLiveAsync"/>.</summary>
    TimeToLive,
    /// <summary><see cref="IClusterStore.CommitAsync"/>.</summary>
    Commit,
    /// <summary><see cref="IClusterStore.ReadAsync"/>.</summary>
    Read,
    /// <summary><see cref="IClusterStore.WaitForChangeAsync"/>.</summary>
    WaitForChange,
    /// <summary>Cancels the running request with the same id (no response of its own).</summary>
    Cancel,
}

/// <summary>
/// One request to the etcd helper: an <see cref="IClusterStore"/> call with its arguments, or the
/// cancellation of one. Fields an operation does not use are left at their defaults.
/// </summary>
/// <param name="Id">Chosen by vdisk, unique among its running requests; the response carries it back.</param>
/// <param name="Operation">The call.</param>
/// <param name="Number">Grant: the TTL in seconds; KeepAlive, Revoke, TimeToLive: the lease; WaitForChange: the revision.</param>
/// <param name="Prefix">Commit: the prefix to read after the writes (or null); Read, WaitForChange: the prefix.</param>
/// <param name="IgnoreSuffix">WaitForChange: changes to keys with this ending do not count.</param>
/// <param name="Writes">Commit: the writes.</param>
public sealed record AgentRequest(long Id, AgentOperation Operation, long Number = 0, string? Prefix = null, string? IgnoreSuffix = null,
    IReadOnlyList<StoreWrite>? Writes = null)
{
    private static readonly string[] Names = ["grant", "keepalive", "revoke", "ttl", "commit", "read", "wait", "cancel"];

    /// <summary>The request as UTF-8 JSON.</summary>
    public byte[] Encode() => AgentJson.Object(w =>
    {
        w.WriteNumber("id", Id);
        w.WriteString("op", Names[(int)Operation]);
        w.WriteNumber("number", Number);
        if (Prefix is not null) w.WriteString("prefix", Prefix);
        if (IgnoreSuffix is not null) w.WriteString("ignore-suffix", IgnoreSuffix);
        if (Writes is not null)
        {
            w.WriteStartArray("writes");
            foreach (var write in Writes)
            {
                w.WriteStartObject();
                w.WriteString("key", write.Key);
                if (write.Value is null) w.WriteNull("value");
                else w.WriteBase64String("value", write.Value);
                w.WriteNumber("lease", write.Lease);
                w.WriteEndObject();
            }
            w.WriteEndArray();
        }
    });

    /// <summary>Reads a request written by <see cref="Encode"/>.</summary>
    /// <exception cref="AgentProtocolException">Not a request.</exception>
    public static AgentRequest Decode(ReadOnlySpan<byte> json) => AgentJson.Read(json, "request", root =>
    {
        string op = root.GetProperty("op").GetString() ?? "";
        int operation = Array.IndexOf(Names, op);
        if (operation < 0) throw new AgentProtocolException($"unknown operation '{op}'");
        List<StoreWrite>? writes = null;
        if (root.TryGetProperty("writes", out var list))
        {
            writes = [];
            foreach (var item in list.EnumerateArray())
            {
                var value = item.GetProperty("value");
                writes.Add(new StoreWrite(item.GetProperty("key").GetString()!,
                    value.ValueKind == JsonValueKind.Null ? null : value.GetBytesFromBase64(), item.GetProperty("lease").GetInt64()));
            }
        }
        return new AgentRequest(root.GetProperty("id").GetInt64(), (AgentOperation)operation, root.GetProperty("number").GetInt64(),
            AgentJson.OptionalString(root, "prefix"), AgentJson.OptionalString(root, "ignore-suffix"), writes);
    });
}
