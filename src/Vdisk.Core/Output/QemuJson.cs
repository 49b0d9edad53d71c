using System.Globalization;
using System.Text;

namespace Vdisk.Output;

/// <summary>
/// A JSON object that prints its members in the order QEMU's QDict iterates them: by bucket of
/// tdb_hash(key) % 512, and within a bucket newest first. qemu-img's JSON output (info, check,
/// measure) goes through a QDict, so this reproduces its key order exactly.
/// </summary>
public sealed class QemuJsonObject
{
    private const int BucketCount = 512;
    private readonly List<KeyValuePair<string, object?>> _members = new();

    /// <summary>Adds a member (string, bool, integer, <see cref="QemuJsonObject"/> or list of objects).</summary>
    public QemuJsonObject Add(string key, object? value)
    {
        _members.Add(new(key, value));
        return this;
    }

    /// <summary>The members in insertion order.</summary>
    public IReadOnlyList<KeyValuePair<string, object?>> Members => _members;

    /// <summary>
    /// The members in QDict iteration order: by bucket, newest first within one. Sorted by hand:
    /// LINQ's ThenBy and a Select after OrderBy are generic virtual methods, whose first call
    /// starts the runtime's type loader (docs/architecture.md, "Start-up").
    /// </summary>
    public KeyValuePair<string, object?>[] OrderedMembers
    {
        get
        {
            var order = new (int Bucket, int Index)[_members.Count];
            for (int i = 0; i < order.Length; i++) order[i] = (Bucket(_members[i].Key), i);
            Array.Sort(order, static (a, b) => a.Bucket != b.Bucket ? a.Bucket.CompareTo(b.Bucket) : b.Index.CompareTo(a.Index));
            var members = new KeyValuePair<string, object?>[order.Length];
            for (int i = 0; i < order.Length; i++) members[i] = _members[order[i].Index];
            return members;
        }
    }

    /// <summary>QEMU's tdb_hash modulo the bucket count.</summary>
    public static int Bucket(string key)
    {
        var bytes = Encoding.UTF8.GetBytes(key);
        uint value = unchecked(0x238F13AFu * (uint)bytes.Length);
        for (int i = 0; i < bytes.Length; i++) value = unchecked(value + ((uint)bytes[i] << (i * 5 % 24)));
        return (int)(unchecked(1103515243u * value + 12345u) % BucketCount);
    }

    /// <summary>qobject_to_json_pretty: four-space indentation, <c>": "</c> separators, no trailing newline.</summary>
    public string ToPrettyJson()
    {
        var sb = new StringBuilder();
        WriteValue(sb, this, 0);
        return sb.ToString();
    }

    /// <summary>qobject_to_json: one line, <c>", "</c> and <c>": "</c> separators (json: filenames).</summary>
    public string ToCompactJson()
    {
        var sb = new StringBuilder();
        WriteCompact(sb, this);
        return sb.ToString();
    }

    private static void WriteCompact(StringBuilder sb, object? value)
    {
        if (value is not QemuJsonObject o)
        {
            WriteValue(sb, value, 0);
            return;
        }
        sb.Append('{');
        bool first = true;
        foreach (var (k, v) in o.OrderedMembers)
        {
            if (!first) sb.Append(", ");
            first = false;
            QemuJsonText.WriteQuoted(sb, k);
            sb.Append(": ");
            WriteCompact(sb, v);
        }
        sb.Append('}');
    }

    /// <summary>A pretty JSON array of objects, as qemu-img info --backing-chain prints it.</summary>
    public static string ToPrettyJson(IReadOnlyList<QemuJsonObject> list)
    {
        var sb = new StringBuilder();
        WriteValue(sb, list, 0);
        return sb.ToString();
    }

    private static void WriteValue(StringBuilder sb, object? value, int depth)
    {
        switch (value)
        {
            case null: sb.Append("null"); break;
            case bool b: sb.Append(b ? "true" : "false"); break;
            case string s: QemuJsonText.WriteQuoted(sb, s); break;
            case int or long or uint or ulong: sb.Append(Convert.ToString(value, CultureInfo.InvariantCulture)); break;
            case double d: sb.Append(d.ToString("R", CultureInfo.InvariantCulture)); break;
            case QemuJsonObject o:
                sb.Append('{');
                bool first = true;
                foreach (var (k, v) in o.OrderedMembers)
                {
                    if (!first) sb.Append(',');
                    first = false;
                    NewLine(sb, depth + 1);
                    QemuJsonText.WriteQuoted(sb, k);
                    sb.Append(": ");
                    WriteValue(sb, v, depth + 1);
                }
                NewLine(sb, depth);
                sb.Append('}');
                break;
            case System.Collections.IEnumerable list:
                sb.Append('[');
                bool firstItem = true;
                foreach (var item in list)
                {
                    if (!firstItem) sb.Append(',');
                    firstItem = false;
                    NewLine(sb, depth + 1);
                    WriteValue(sb, item, depth + 1);
                }
                NewLine(sb, depth);
                sb.Append(']');
                break;
            default:
                QemuJsonText.WriteQuoted(sb, value.ToString() ?? "");
                break;
        }
    }

    private static void NewLine(StringBuilder sb, int depth) => sb.Append('\n').Append(' ', depth * 4);
}

/// <summary>QEMU's JSON string quoting, shared by qemu-img's JSON output and the QMP monitor.</summary>
public static class QemuJsonText
{
    /// <summary>
    /// json-writer.c quoted_str: escapes quotes, backslashes and the usual control characters,
    /// and every other character outside printable ASCII as \uXXXX (UTF-16 code units, so
    /// characters beyond the BMP become a surrogate pair, as in QEMU).
    /// </summary>
    public static void WriteQuoted(StringBuilder sb, string s)
    {
        sb.Append('"');
        foreach (char c in s)
        {
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\b': sb.Append("\\b"); break;
                case '\f': sb.Append("\\f"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                default:
                    if (c < 0x20 || c >= 0x7F) sb.Append("\\u").Append(((int)c).ToString("X4", CultureInfo.InvariantCulture));
                    else sb.Append(c);
                    break;
            }
        }
        sb.Append('"');
    }
}
