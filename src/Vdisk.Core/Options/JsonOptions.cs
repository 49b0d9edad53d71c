using System.Globalization;
using System.Text;
using System.Text.Json;

namespace Vdisk.Options;

/// <summary>
/// The one JSON reader of vdisk, for <c>json:{...}</c> pseudo-filenames and for QMP input alike,
/// with QEMU's rule for both (qobject/json-parser.c and json-streamer.c): nesting up to
/// <see cref="MaxNesting"/>, integers as int64, else uint64, else a double printed as
/// <c>%.17g</c> prints it, booleans and null typed, strings as strings. Read with
/// <see cref="Utf8JsonReader"/> (no reflection, NativeAOT-safe) into the same
/// <see cref="OptionDict"/> tree keyval gives.
/// </summary>
public static class JsonOptions
{
    /// <summary>The prefix that marks a JSON filename.</summary>
    public const string Prefix = "json:";

    /// <summary>Deepest nesting of objects and arrays together (json-streamer.c's MAX_NESTING).</summary>
    public const int MaxNesting = 1024;

    /// <summary>True when <paramref name="filename"/> is a <c>json:</c> pseudo-filename.</summary>
    public static bool IsJsonFilename(string filename) => filename.StartsWith(Prefix, StringComparison.Ordinal);

    /// <summary>
    /// Parses the text after <c>json:</c>. Errors read like QEMU's:
    /// <c>Could not parse the JSON options: ...</c>.
    /// </summary>
    public static OptionDict ParseFilename(string filename)
    {
        OptionValue value;
        try
        {
            value = Parse(Encoding.UTF8.GetBytes(filename[Prefix.Length..]));
        }
        catch (JsonSyntaxException e)
        {
            throw new OptionException($"Could not parse the JSON options: {e.Message}");
        }
        return value as OptionDict ?? throw new OptionException("Invalid JSON object given");
    }

    /// <summary>Parses one complete JSON value.</summary>
    /// <exception cref="JsonSyntaxException">Malformed JSON, worded like QEMU's (<c>JSON parse error, ...</c>).</exception>
    public static OptionValue Parse(ReadOnlySpan<byte> json)
    {
        byte[]? standard = json.IndexOf((byte)'\'') >= 0 ? WithStandardQuotes(json) : null;
        if (standard is not null) json = standard;
        // The reader's own limit sits above QEMU's so that QEMU's is the one that speaks.
        var reader = new Utf8JsonReader(json, new JsonReaderOptions { MaxDepth = MaxNesting + 1, CommentHandling = JsonCommentHandling.Disallow });
        OptionValue? value = null;
        try
        {
            if (!reader.Read()) throw new JsonSyntaxException("Expecting a JSON value");
            value = ReadValue(ref reader);
            if (reader.Read()) throw new JsonSyntaxException("Expecting at most one JSON value");
            return value;
        }
        catch (JsonException)
        {
            if (value is not null) throw new JsonSyntaxException("Expecting at most one JSON value");
            throw Describe(json, reader.BytesConsumed);
        }
    }

    private static OptionValue ReadValue(ref Utf8JsonReader reader)
    {
        switch (reader.TokenType)
        {
            case JsonTokenType.StartObject:
                CheckNesting(ref reader);
                var dict = new OptionDict();
                while (reader.Read() && reader.TokenType != JsonTokenType.EndObject)
                {
                    string key = reader.GetString()!;
                    reader.Read();
                    dict.Set(key, ReadValue(ref reader));
                }
                return dict;
            case JsonTokenType.StartArray:
                CheckNesting(ref reader);
                var list = new OptionList();
                while (reader.Read() && reader.TokenType != JsonTokenType.EndArray) list.Items.Add(ReadValue(ref reader));
                return list;
            case JsonTokenType.String:
                return new OptionScalar(reader.GetString()!);
            case JsonTokenType.Number:
                return new OptionScalar(NumberText(Encoding.UTF8.GetString(reader.ValueSpan)), ScalarKind.Number);
            case JsonTokenType.True:
                return new OptionScalar("true", ScalarKind.Bool);
            case JsonTokenType.False:
                return new OptionScalar("false", ScalarKind.Bool);
            default:
                return new OptionScalar("null", ScalarKind.Null);
        }
    }

    /// <summary>At an opening brace or bracket: the levels it opens, QEMU's counters added up.</summary>
    private static void CheckNesting(ref Utf8JsonReader reader)
    {
        if (reader.CurrentDepth + 1 > MaxNesting) throw new JsonSyntaxException("JSON nesting depth limit exceeded");
    }

    /// <summary>
    /// parse_literal: qemu_strtoi64, else (not negative) qemu_strtou64, else strtod; the text is the
    /// one QEMU gives the value wherever it becomes a string (qnum_to_string: <c>%.17g</c>).
    /// </summary>
    private static string NumberText(string text)
    {
        if (long.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long l)) return l.ToString(CultureInfo.InvariantCulture);
        if (ulong.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out ulong u)) return u.ToString(CultureInfo.InvariantCulture);
        double d = double.Parse(text, NumberStyles.Float, CultureInfo.InvariantCulture);
        if (double.IsInfinity(d)) return d > 0 ? "inf" : "-inf";
        return d.ToString("G17", CultureInfo.InvariantCulture).Replace("E", "e", StringComparison.Ordinal);
    }

    private static JsonSyntaxException Describe(ReadOnlySpan<byte> json, long consumed)
    {
        if (json.Trim(" \t\n\r"u8).IsEmpty) return new JsonSyntaxException("Expecting a JSON value");
        if (IsTruncated(json)) return new JsonSyntaxException("JSON parse error, premature EOI");
        // QEMU names a word it cannot read where a value belongs; everything else is "expecting value".
        string rest = Encoding.UTF8.GetString(json[(int)consumed..]).TrimStart(' ', '\t', '\n', '\r', ':', ',');
        int end = 0;
        while (end < rest.Length && char.IsAsciiLetterOrDigit(rest[end])) end++;
        if (end > 0 && char.IsAsciiLetter(rest[0]) && rest[..end] is not ("true" or "false" or "null"))
            return new JsonSyntaxException($"JSON parse error, invalid keyword '{rest[..end]}'");
        return new JsonSyntaxException("JSON parse error, expecting value");
    }

    /// <summary>
    /// QEMU's JSON lexer (json-lexer.c) also takes strings in single quotes, where <c>"</c> is an
    /// ordinary character, and the escape <c>\'</c> in strings of either kind; the iotests and
    /// many scripts write <c>json:{'driver': 'qcow2', ...}</c>. System.Text.Json takes neither,
    /// so such text is rewritten into standard JSON first; nothing outside strings changes.
    /// </summary>
    private static byte[] WithStandardQuotes(ReadOnlySpan<byte> json)
    {
        var output = new List<byte>(json.Length + 16);
        byte quote = 0;
        for (int i = 0; i < json.Length; i++)
        {
            byte b = json[i];
            if (quote == 0)
            {
                if (b is (byte)'\'' or (byte)'"') quote = b;
                output.Add(b == '\'' ? (byte)'"' : b);
            }
            else if (b == '\\' && i + 1 < json.Length)
            {
                byte next = json[++i];
                if (next != '\'') output.Add(b);
                output.Add(next);
            }
            else if (b == quote)
            {
                output.Add((byte)'"');
                quote = 0;
            }
            else
            {
                if (b == '"') output.Add((byte)'\\');
                output.Add(b);
            }
        }
        return output.ToArray();
    }

    /// <summary>True when the text is a valid beginning of JSON that just stops early.</summary>
    private static bool IsTruncated(ReadOnlySpan<byte> json)
    {
        var reader = new Utf8JsonReader(json, isFinalBlock: false, state: new JsonReaderState(new JsonReaderOptions { MaxDepth = MaxNesting + 1 }));
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
}

/// <summary>Malformed JSON; the message is QEMU's (<c>JSON parse error, premature EOI</c>, ...).</summary>
public sealed class JsonSyntaxException(string message) : FormatException(message);
