using System.Text.Json;

namespace Vdisk.Locking.Cluster.Agent;

/// <summary>How a request to the etcd helper failed; vdisk raises the matching exception.</summary>
public enum AgentErrorKind
{
    /// <summary>No failure.</summary>
    None,
    /// <summary><see cref="ClusterUnavailableException"/>: no endpoint answered.</summary>
    Unavailable,
    /// <summary><see cref="ClusterFencedException"/>.</summary>
    Fenced,
    /// <summary><see cref="ClusterLockException"/>: etcd refused, or anything else went wrong.</summary>
    Refused,
    /// <summary>The request was cancelled.</summary>
    Canceled,
}

/// <summary>
/// The etcd helper's answer to one <see cref="AgentRequest"/>: the result, or the error. Fields a
/// result does not use are left at their defaults.
/// </summary>
/// <param name="Id">The request's id.</param>
/// <param name="Error">How it failed, or <see cref="AgentErrorKind.None"/>.</param>
/// <param name="Message">The error's message.</param>
/// <param name="Number">Grant: the lease id; KeepAlive, TimeToLive: the TTL; WaitForChange: the revision.</param>
/// <param name="Ttl">Grant: the TTL the server granted.</param>
/// <param name="Revision">Commit, Read: the store's revision after the call.</param>
/// <param name="Entries">Commit, Read: the keys read.</param>
public sealed record AgentResponse(long Id, AgentErrorKind Error = AgentErrorKind.None, string? Message = null, long Number = 0, long Ttl = 0,
    long Revision = 0, IReadOnlyList<StoreEntry>? Entries = null)
{
    private static readonly string[] Kinds = ["", "unavailable", "fenced", "refused", "canceled"];

    /// <summary>The failure of <paramref name="id"/> as the exception <paramref name="e"/> describes it.</summary>
    public static AgentResponse Failure(long id, Exception e) => e switch
    {
        OperationCanceledException => new AgentResponse(id, AgentErrorKind.Canceled, "canceled"),
        ClusterUnavailableException => new AgentResponse(id, AgentErrorKind.Unavailable, e.Message),
        ClusterFencedException => new AgentResponse(id, AgentErrorKind.Fenced, e.Message),
        _ => new AgentResponse(id, AgentErrorKind.Refused, e.Message),
    };

    /// <summary>The exception this failure stands for (null when there is none).</summary>
    public Exception? ToException(CancellationToken cancelled) => Error switch
    {
        AgentErrorKind.None => null,
        AgentErrorKind.Unavailable => new ClusterUnavailableException(Message ?? ""),
        AgentErrorKind.Fenced => new ClusterFencedException(Message ?? ""),
        AgentErrorKind.Canceled => new OperationCanceledException(cancelled),
        _ => new ClusterLockException(Message ?? ""),
    };

    /// <summary>The response as UTF-8 JSON.</summary>
    public byte[] Encode() => AgentJson.Object(w =>
    {
        w.WriteNumber("id", Id);
        if (Error != AgentErrorKind.None)
        {
            w.WriteString("error", Kinds[(int)Error]);
            w.WriteString("message", Message ?? "");
        }
        w.WriteNumber("number", Number);
        w.WriteNumber("ttl", Ttl);
        w.WriteNumber("revision", Revision);
        if (Entries is not null)
        {
            w.WriteStartArray("entries");
            foreach (var e in Entries)
            {
                w.WriteStartObject();
                w.WriteString("key", e.Key);
                w.WriteBase64String("value", e.Value);
                w.WriteNumber("create-revision", e.CreateRevision);
                w.WriteNumber("mod-revision", e.ModRevision);
                w.WriteNumber("lease", e.Lease);
                w.WriteEndObject();
            }
            w.WriteEndArray();
        }
    });

    /// <summary>Reads a response written by <see cref="Encode"/>.</summary>
    /// <exception cref="AgentProtocolException">Not a response.</exception>
    public static AgentResponse Decode(ReadOnlySpan<byte> json) => AgentJson.Read(json, "response", root =>
    {
        var error = AgentErrorKind.None;
        if (AgentJson.OptionalString(root, "error") is { } kind)
        {
            int k = Array.IndexOf(Kinds, kind);
            if (k <= 0) throw new AgentProtocolException($"unknown error kind '{kind}'");
            error = (AgentErrorKind)k;
        }
        List<StoreEntry>? entries = null;
        if (root.TryGetProperty("entries", out var list))
        {
            entries = [];
            foreach (var e in list.EnumerateArray())
                entries.Add(new StoreEntry(e.GetProperty("key").GetString()!, e.GetProperty("value").GetBytesFromBase64(),
                    e.GetProperty("create-revision").GetInt64(), e.GetProperty("mod-revision").GetInt64(), e.GetProperty("lease").GetInt64()));
        }
        return new AgentResponse(root.GetProperty("id").GetInt64(), error, AgentJson.OptionalString(root, "message"),
            root.GetProperty("number").GetInt64(), root.GetProperty("ttl").GetInt64(), root.GetProperty("revision").GetInt64(), entries);
    });
}
