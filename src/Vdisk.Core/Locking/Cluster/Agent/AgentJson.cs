using System.Text.Json;

namespace Vdisk.Locking.Cluster.Agent;

/// <summary>What encoding and decoding every message of the etcd helper's protocol share.</summary>
internal static class AgentJson
{
    /// <summary>One JSON object, written by <paramref name="writeMembers"/>, as UTF-8.</summary>
    public static byte[] Object(Action<Utf8JsonWriter> writeMembers)
    {
        using var stream = new MemoryStream();
        using (var w = new Utf8JsonWriter(stream))
        {
            w.WriteStartObject();
            writeMembers(w);
            w.WriteEndObject();
        }
        return stream.ToArray();
    }

    /// <summary>
    /// Reads one JSON object with <paramref name="read"/>; anything else, or a member missing or
    /// of the wrong kind, is an <see cref="AgentProtocolException"/> naming <paramref name="what"/>.
    /// </summary>
    public static T Read<T>(ReadOnlySpan<byte> json, string what, Func<JsonElement, T> read)
    {
        try
        {
            var reader = new Utf8JsonReader(json);
            using var doc = JsonDocument.ParseValue(ref reader);
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new AgentProtocolException($"a {what} is not a JSON object");
            return read(doc.RootElement);
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or FormatException)
        {
            throw new AgentProtocolException($"malformed {what}: {e.Message}");
        }
    }

    /// <summary>A string member, or null when it is absent or not a string.</summary>
    public static string? OptionalString(JsonElement root, string name) =>
        root.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;
}
