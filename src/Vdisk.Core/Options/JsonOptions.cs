using System.Text.Json;

namespace Vdisk.Options;

/// <summary>
/// <c>json:{...}</c> pseudo-filenames and QMP argument objects, read with System.Text.Json's
/// reader (no reflection, NativeAOT-safe) into the same <see cref="OptionDict"/> tree keyval gives.
/// </summary>
public static class JsonOptions
{
    /// <summary>The prefix that marks a JSON filename.</summary>
    public const string Prefix = "json:";

    /// <summary>True when <paramref name="filename"/> is a <c>json:</c> pseudo-filename.</summary>
    public static bool IsJsonFilename(string filename) => filename.StartsWith(Prefix, StringComparison.Ordinal);

    /// <summary>
    /// Parses the text after <c>json:</c>. Errors read like QEMU's:
    /// <c>Could not parse the JSON options: ...</c>.
    /// </summary>
    public static OptionDict ParseFilename(string filename)
    {
        string json = filename[Prefix.Length..];
        OptionValue value;
        try
        {
            value = ParseValue(json);
        }
        catch (JsonException e)
        {
            throw new OptionException($"Could not parse the JSON options: {Describe(e, json)}");
        }
        return value as OptionDict ?? throw new OptionException("Invalid JSON object given");
    }

    /// <summary>Parses any JSON text into an option value. Throws <see cref="JsonException"/> when malformed.</summary>
    public static OptionValue ParseValue(string json)
    {
        using var doc = JsonDocument.Parse(json, new JsonDocumentOptions { AllowTrailingCommas = false, MaxDepth = 64 });
        return FromElement(doc.RootElement);
    }

    /// <summary>Converts a JSON element into an option value.</summary>
    public static OptionValue FromElement(JsonElement element)
    {
        switch (element.ValueKind)
        {
            case JsonValueKind.Object:
                var dict = new OptionDict();
                foreach (var p in element.EnumerateObject()) dict.Set(p.Name, FromElement(p.Value));
                return dict;
            case JsonValueKind.Array:
                var list = new OptionList();
                foreach (var item in element.EnumerateArray()) list.Items.Add(FromElement(item));
                return list;
            case JsonValueKind.String:
                return new OptionScalar(element.GetString()!);
            case JsonValueKind.Number:
                return new OptionScalar(element.GetRawText(), ScalarKind.Number);
            case JsonValueKind.True:
                return new OptionScalar("true", ScalarKind.Bool);
            case JsonValueKind.False:
                return new OptionScalar("false", ScalarKind.Bool);
            default:
                return new OptionScalar("null", ScalarKind.Null);
        }
    }

    /// <summary>True when the text is a valid JSON prefix that simply ends too early.</summary>
    private static bool IsTruncated(string json)
    {
        var reader = new Utf8JsonReader(System.Text.Encoding.UTF8.GetBytes(json), isFinalBlock: false, state: default);
        try
        {
            while (reader.Read()) { }
            return reader.CurrentDepth > 0 || reader.TokenType is JsonTokenType.None or JsonTokenType.PropertyName;
        }
        catch (JsonException)
        {
            return false;
        }
    }

    private static string Describe(JsonException e, string json)
    {
        // QEMU's parser reports truncated input as "premature EOI"; keep that wording.
        if (IsTruncated(json)) return "JSON parse error, premature EOI";
        if (json.Trim().Length == 0) return "JSON parse error, premature EOI";
        return "JSON parse error, " + (e.Message.Split(" Path:", 2)[0].Split(" LineNumber:", 2)[0].TrimEnd('.', ' '));
    }
}
