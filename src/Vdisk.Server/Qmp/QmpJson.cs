using System.Globalization;
using System.Text;
using System.Text.Json;
using Vdisk.Options;

namespace Vdisk.Server.Qmp;

/// <summary>
/// JSON as QMP speaks it. Input is read with <see cref="Utf8JsonReader"/> into the option tree
/// the rest of vdisk uses (<see cref="OptionDict"/>, typed scalars). Output is written by hand,
/// because QEMU's layout is not Utf8JsonWriter's: <c>", "</c> and <c>": "</c> separators, keys in
/// QDict order (<see cref="QDictOrder"/>), and QEMU's escapes (\uXXXX in upper case for
/// everything outside printable ASCII). No reflection anywhere (NativeAOT).
/// </summary>
public static class QmpJson
{
    /// <summary>Deepest nesting accepted (QEMU's MAX_NESTING).</summary>
    public const int MaxDepth = 1024;

    /// <summary>Parses one complete JSON value.</summary>
    /// <exception cref="QmpException">Malformed JSON, worded like QEMU's <c>JSON parse error, ...</c>.</exception>
    public static OptionValue Parse(ReadOnlySpan<byte> json)
    {
        var reader = new Utf8JsonReader(json, new JsonReaderOptions { MaxDepth = MaxDepth + 1, CommentHandling = JsonCommentHandling.Disallow });
        try
        {
            if (!reader.Read()) throw ParseError(json);
            var value = ReadValue(ref reader);
            if (reader.Read()) throw ParseError(json);
            return value;
        }
        catch (JsonException)
        {
            throw ParseError(json);
        }
    }

    private static OptionValue ReadValue(ref Utf8JsonReader reader)
    {
        switch (reader.TokenType)
        {
            case JsonTokenType.StartObject:
                var dict = new OptionDict();
                while (reader.Read() && reader.TokenType != JsonTokenType.EndObject)
                {
                    string key = reader.GetString()!;
                    reader.Read();
                    dict.Set(key, ReadValue(ref reader));
                }
                return dict;
            case JsonTokenType.StartArray:
                var list = new OptionList();
                while (reader.Read() && reader.TokenType != JsonTokenType.EndArray) list.Items.Add(ReadValue(ref reader));
                return list;
            case JsonTokenType.String:
                return new OptionScalar(reader.GetString()!);
            case JsonTokenType.Number:
                return new OptionScalar(NormalizeNumber(Encoding.UTF8.GetString(reader.ValueSpan)), ScalarKind.Number);
            case JsonTokenType.True:
                return new OptionScalar("true", ScalarKind.Bool);
            case JsonTokenType.False:
                return new OptionScalar("false", ScalarKind.Bool);
            default:
                return new OptionScalar("null", ScalarKind.Null);
        }
    }

    /// <summary>Integers stay as written; other numbers print as QEMU's <c>%.17g</c> would.</summary>
    private static string NormalizeNumber(string text)
    {
        if (long.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long l)) return l.ToString(CultureInfo.InvariantCulture);
        if (ulong.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out ulong u)) return u.ToString(CultureInfo.InvariantCulture);
        double d = double.Parse(text, NumberStyles.Float, CultureInfo.InvariantCulture);
        return d.ToString("G17", CultureInfo.InvariantCulture).Replace("E", "e", StringComparison.Ordinal);
    }

    private static QmpException ParseError(ReadOnlySpan<byte> json)
    {
        if (IsTruncated(json)) return QmpException.Generic("JSON parse error, premature EOI");
        // QEMU names a bare word it cannot read; everything else is "expecting value".
        string text = Encoding.UTF8.GetString(json).TrimStart();
        if (text.Length > 0 && char.IsAsciiLetter(text[0]))
        {
            int end = 0;
            while (end < text.Length && char.IsAsciiLetterOrDigit(text[end])) end++;
            string word = text[..end];
            if (word is not ("true" or "false" or "null")) return QmpException.Generic($"JSON parse error, invalid keyword '{word}'");
        }
        return QmpException.Generic("JSON parse error, expecting value");
    }

    /// <summary>True when the text is a valid beginning of JSON that just stops early.</summary>
    private static bool IsTruncated(ReadOnlySpan<byte> json)
    {
        var reader = new Utf8JsonReader(json, isFinalBlock: false, state: new JsonReaderState(new JsonReaderOptions { MaxDepth = MaxDepth + 1 }));
        try
        {
            while (reader.Read()) { }
            return reader.CurrentDepth > 0 || reader.TokenType is JsonTokenType.PropertyName;
        }
        catch (JsonException)
        {
            return false;
        }
    }

    /// <summary>Writes <paramref name="value"/> as QEMU would print it.</summary>
    public static string Serialize(OptionValue value)
    {
        var sb = new StringBuilder();
        Write(sb, value);
        return sb.ToString();
    }

    private static void Write(StringBuilder sb, OptionValue value)
    {
        switch (value)
        {
            case OptionDict dict:
                sb.Append('{');
                bool first = true;
                foreach (var (key, item) in QDictOrder.Entries(dict))
                {
                    if (!first) sb.Append(", ");
                    first = false;
                    Vdisk.Output.QemuJsonText.WriteQuoted(sb, key);
                    sb.Append(": ");
                    Write(sb, item);
                }
                sb.Append('}');
                break;
            case OptionList list:
                sb.Append('[');
                for (int i = 0; i < list.Items.Count; i++)
                {
                    if (i > 0) sb.Append(", ");
                    Write(sb, list.Items[i]);
                }
                sb.Append(']');
                break;
            case OptionScalar { Kind: ScalarKind.String } s:
                Vdisk.Output.QemuJsonText.WriteQuoted(sb, s.Text);
                break;
            case OptionScalar s:
                sb.Append(s.Text);
                break;
        }
    }

    // Builders for replies, so that command code reads like the QAPI structures it returns.

    /// <summary>A string value.</summary>
    public static OptionScalar Str(string s) => new(s);

    /// <summary>An integer value.</summary>
    public static OptionScalar Int(long n) => new(n.ToString(CultureInfo.InvariantCulture), ScalarKind.Number);

    /// <summary>A boolean value.</summary>
    public static OptionScalar Bool(bool b) => new(b ? "true" : "false", ScalarKind.Bool);

    /// <summary>An object built from key/value pairs in QEMU's insertion order.</summary>
    public static OptionDict Dict(params (string Key, OptionValue Value)[] entries)
    {
        var dict = new OptionDict();
        foreach (var (k, v) in entries) dict.Set(k, v);
        return dict;
    }

    /// <summary>An array.</summary>
    public static OptionList List(IEnumerable<OptionValue> items)
    {
        var list = new OptionList();
        list.Items.AddRange(items);
        return list;
    }
}
