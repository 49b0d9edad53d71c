using System.Text.Json;

namespace Vdisk.Locking.Cluster;

/// <summary>
/// Who holds a cluster lock, stored as the value of each of the holder's keys, so that a
/// refused opener, <c>vdisk locks --cluster</c> and an operator with etcdctl can all name the
/// holder: host, PID, command, lease, and which file on that host it opened.
/// </summary>
/// <param name="Holder">The holder's id (unique per node and lease), the last segment of its keys.</param>
/// <param name="Host">The host id (<c>VDISK_HOST_ID</c>).</param>
/// <param name="Pid">The process id on that host.</param>
/// <param name="Command">The command, e.g. <c>vdisk serve</c>.</param>
/// <param name="Lease">The etcd lease the keys are attached to.</param>
/// <param name="File">The image file as that host opened it.</param>
/// <param name="Node">The node name, or null.</param>
/// <param name="FileId">Device and inode on that host (<c>maj:min:ino</c>), or null.</param>
/// <param name="DeviceId">A host-independent identity of a block device (WWID or serial), or null.</param>
public sealed record ClusterHolderRecord(string Holder, string Host, int Pid, string Command, long Lease, string File, string? Node,
    string? FileId, string? DeviceId)
{
    /// <summary>The record as JSON (UTF-8), written without reflection.</summary>
    public byte[] Encode()
    {
        using var stream = new MemoryStream();
        using (var w = new Utf8JsonWriter(stream))
        {
            w.WriteStartObject();
            w.WriteString("holder", Holder);
            w.WriteString("host", Host);
            w.WriteNumber("pid", Pid);
            w.WriteString("command", Command);
            w.WriteString("lease", Lease.ToString("x", System.Globalization.CultureInfo.InvariantCulture));
            w.WriteString("file", File);
            WriteOptional(w, "node", Node);
            WriteOptional(w, "file-id", FileId);
            WriteOptional(w, "device-id", DeviceId);
            w.WriteEndObject();
        }
        return stream.ToArray();
    }

    private static void WriteOptional(Utf8JsonWriter w, string name, string? value)
    {
        if (value is null) w.WriteNull(name);
        else w.WriteString(name, value);
    }

    /// <summary>Reads a record written by <see cref="Encode"/>; null when the value is not one (another program's key).</summary>
    public static ClusterHolderRecord? Decode(ReadOnlySpan<byte> json)
    {
        try
        {
            var reader = new Utf8JsonReader(json);
            using var doc = JsonDocument.ParseValue(ref reader);
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) return null;
            string? Text(string name) => root.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;
            string? holder = Text("holder"), host = Text("host"), command = Text("command"), lease = Text("lease"), file = Text("file");
            if (holder is null || host is null || command is null || lease is null || file is null) return null;
            if (!root.TryGetProperty("pid", out var pid) || !pid.TryGetInt32(out int pidValue)) return null;
            if (!long.TryParse(lease, System.Globalization.NumberStyles.HexNumber, System.Globalization.CultureInfo.InvariantCulture, out long leaseId)) return null;
            return new ClusterHolderRecord(holder, host, pidValue, command, leaseId, file, Text("node"), Text("file-id"), Text("device-id"));
        }
        catch (JsonException)
        {
            return null;
        }
    }

    /// <summary><c>host B, pid 1234 (vdisk serve)</c>: the holder in sentences.</summary>
    public string Describe() => $"host {Host}, pid {Pid} ({Command})";

    /// <summary>The lease id as etcdctl prints it (hexadecimal).</summary>
    public string LeaseHex => Lease.ToString("x", System.Globalization.CultureInfo.InvariantCulture);
}
