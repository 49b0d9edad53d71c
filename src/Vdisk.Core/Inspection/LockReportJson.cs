using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using Vdisk.Permissions;

namespace Vdisk.Inspection;

/// <summary>
/// The JSON form of lock reports (<c>vdisk locks --output json</c>), written with
/// <see cref="Utf8JsonWriter"/> (no reflection). Keys are kebab-case like qemu-img's; permission
/// names are QAPI's (<c>consistent-read</c>, <c>write</c>, <c>write-unchanged</c>, <c>resize</c>).
/// </summary>
/// <remarks>
/// Shape: <c>{"format": "raw"|"qcow2"|null, "modes": [MODE...], "images": [IMAGE...]}</c>, the
/// format null when each image's was probed. A MODE is <c>{"mode", "tool", "perm": [...], "shared":
/// [...]}</c>: the request judged, on the image file (perm and shared null when formats were
/// probed: the request depends on each image's format). An IMAGE is
/// <c>{"path", "error": null|text, "format": "raw"|"qcow2"|null, "device": "fe:00", "inode", "unreadable-processes",
/// "holders": [HOLDER...], "verdicts": [VERDICT...]}</c> (only path and error when error is set).
/// A HOLDER is <c>{"kind": "ofd"|"posix"|"flock"|"unknown", "pid", "fd", "command",
/// "command-line", "shared-with": [{"pid", "fd", "command"}], "locks": [{"type": "ofd"|"posix"|"flock",
/// "mode": "read"|"write", "start", "end" (null = EOF)}], "holds": [...], "refuses": [...],
/// "other-locks": bool, "unknown-reason"}</c> (null where not known). A VERDICT is
/// <c>{"mode", "admitted", "error", "byte", "blockers": [{"holder": index, "pid"}], "reason"}</c>
/// (error, byte and reason null when admitted).
/// </remarks>
public static class LockReportJson
{
    /// <summary>The whole report as indented JSON text, every verdict assuming <paramref name="format"/>.</summary>
    public static string ToJson(IReadOnlyList<ImageLocks> images, IReadOnlyList<AccessMode> modes, string format) =>
        ToJson(images, modes, format, _ => format);

    /// <summary>
    /// The whole report as indented JSON text: <paramref name="format"/> is the format given for
    /// every image, or null when <paramref name="formatOf"/> gives each image's (null for an
    /// image whose verdicts do not depend on it: one without locks).
    /// </summary>
    public static string ToJson(IReadOnlyList<ImageLocks> images, IReadOnlyList<AccessMode> modes, string? format, Func<ImageLocks, string?> formatOf)
    {
        using var stream = new MemoryStream();
        Write(stream, images, modes, format, formatOf);
        return Encoding.UTF8.GetString(stream.GetBuffer(), 0, (int)stream.Length);
    }

    /// <summary>
    /// Writes the report (see <see cref="ToJson(IReadOnlyList{ImageLocks}, IReadOnlyList{AccessMode}, string?, Func{ImageLocks, string?})"/>)
    /// to <paramref name="output"/> as it goes: a scan of 10,000 images is ~12 MB of JSON, which
    /// built whole in memory and decoded into a string cost more than the scan.
    /// </summary>
    public static void Write(Stream output, IReadOnlyList<ImageLocks> images, IReadOnlyList<AccessMode> modes, string? format, Func<ImageLocks, string?> formatOf)
    {
        using var w = new Utf8JsonWriter(output, WriterOptions);
        w.WriteStartObject();
        w.WriteString("format", format);
        WriteModes(w, modes, format);
        w.WriteStartArray("images");
        foreach (var image in images)
        {
            WriteImage(w, image, modes, formatOf(image));
            if (w.BytesPending >= FlushThreshold) w.Flush();
        }
        w.WriteEndArray();
        w.WriteEndObject();
    }

    /// <summary>Indented, and non-ASCII characters in paths as they are (qemu-img's JSON does not escape them).</summary>
    internal static readonly JsonWriterOptions WriterOptions = new() { Indented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    private const int FlushThreshold = 64 * 1024;

    /// <summary>Writes the <c>modes</c> array: each mode's request on the image file.</summary>
    internal static void WriteModes(Utf8JsonWriter w, IReadOnlyList<AccessMode> modes, string? format)
    {
        w.WriteStartArray("modes");
        foreach (var mode in modes)
        {
            w.WriteStartObject();
            w.WriteString("mode", AccessModes.Name(mode));
            w.WriteString("tool", AccessModes.Tool(mode));
            if (format is null)
            {
                w.WriteNull("perm");
                w.WriteNull("shared");
            }
            else
            {
                var request = AccessModes.FileRequest(mode, format);
                WritePermissions(w, "perm", request.Perm);
                WritePermissions(w, "shared", request.Shared);
            }
            w.WriteEndObject();
        }
        w.WriteEndArray();
    }

    /// <summary>Writes one image object, its verdicts assuming <paramref name="format"/> (raw when null).</summary>
    public static void WriteImage(Utf8JsonWriter w, ImageLocks image, IReadOnlyList<AccessMode> modes, string? format)
    {
        w.WriteStartObject();
        w.WriteString("path", image.Path);
        if (image.Error is not null || image.File is not { } file)
        {
            w.WriteString("error", image.Error);
            w.WriteEndObject();
            return;
        }
        w.WriteNull("error");
        w.WriteString("format", format);
        w.WriteString("device", $"{file.DevMajor:x2}:{file.DevMinor:x2}");
        w.WriteNumber("inode", file.Inode);
        w.WriteNumber("unreadable-processes", image.UninspectableProcesses);
        w.WriteStartArray("holders");
        foreach (var h in image.Holders) WriteHolder(w, h);
        w.WriteEndArray();
        w.WriteStartArray("verdicts");
        foreach (var mode in modes) WriteVerdict(w, image, mode, image.Verdict(mode, format ?? "raw"));
        w.WriteEndArray();
        w.WriteEndObject();
    }

    private static void WriteHolder(Utf8JsonWriter w, LockHolder h)
    {
        w.WriteStartObject();
        w.WriteString("kind", h.Kind switch
        {
            LockHolderKind.OpenFileDescription => "ofd",
            LockHolderKind.Posix => "posix",
            LockHolderKind.Flock => "flock",
            _ => "unknown",
        });
        WriteNullableNumber(w, "pid", h.Process?.Pid);
        WriteNullableNumber(w, "fd", h.Descriptor);
        w.WriteString("command", h.Process?.Command);
        w.WriteString("command-line", h.Process?.CommandLine);
        w.WriteStartArray("shared-with");
        foreach (var s in h.SharedWith)
        {
            w.WriteStartObject();
            w.WriteNumber("pid", s.Process.Pid);
            w.WriteNumber("fd", s.Descriptor);
            w.WriteString("command", s.Process.Command);
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteStartArray("locks");
        foreach (var l in h.Locks)
        {
            w.WriteStartObject();
            w.WriteString("type", l.Kind switch { KernelLockKind.Ofd => "ofd", KernelLockKind.Posix => "posix", KernelLockKind.Flock => "flock", _ => "other" });
            w.WriteString("mode", l.Exclusive ? "write" : "read");
            w.WriteNumber("start", l.Start);
            WriteNullableNumber(w, "end", l.End == long.MaxValue ? null : l.End);
            w.WriteEndObject();
        }
        w.WriteEndArray();
        WritePermissions(w, "holds", h.Holds);
        WritePermissions(w, "refuses", h.Refuses);
        w.WriteBoolean("other-locks", h.HasOtherLocks);
        w.WriteString("unknown-reason", h.UnknownReason);
        w.WriteEndObject();
    }

    private static void WriteVerdict(Utf8JsonWriter w, ImageLocks image, AccessMode mode, LockVerdict v)
    {
        w.WriteStartObject();
        w.WriteString("mode", AccessModes.Name(mode));
        w.WriteBoolean("admitted", v.Admitted);
        w.WriteString("error", v.Error);
        WriteNullableNumber(w, "byte", v.Offset);
        w.WriteStartArray("blockers");
        foreach (var b in v.Blockers)
        {
            w.WriteStartObject();
            w.WriteNumber("holder", IndexOf(image.Holders, b));
            WriteNullableNumber(w, "pid", b.Process?.Pid);
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteString("reason", v.Admitted ? null : v.Reason);
        w.WriteEndObject();
    }

    private static int IndexOf(IReadOnlyList<LockHolder> holders, LockHolder h)
    {
        for (int i = 0; i < holders.Count; i++)
            if (ReferenceEquals(holders[i], h)) return i;
        return -1;
    }

    internal static void WritePermissions(Utf8JsonWriter w, string name, BlockPermission perms)
    {
        w.WriteStartArray(name);
        foreach (var bit in BlockPermissions.Bits(perms)) w.WriteStringValue(BlockPermissions.QapiName(bit));
        w.WriteEndArray();
    }

    internal static void WriteNullableNumber(Utf8JsonWriter w, string name, long? value)
    {
        if (value is { } v) w.WriteNumber(name, v);
        else w.WriteNull(name);
    }
}
