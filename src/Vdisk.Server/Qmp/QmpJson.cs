using System.Globalization;
using System.Text;
using Vdisk.Options;

namespace Vdisk.Server.Qmp;

/// <summary>
/// JSON as QMP speaks it. Input is read by vdisk's one JSON reader (<see cref="JsonOptions"/>)
/// into the option tree the rest of vdisk uses (<see cref="OptionDict"/>, typed scalars). Output is written by hand,
/// because QEMU's layout is not Utf8JsonWriter's: <c>", "</c> and <c>": "</c> separators, keys in
/// QDict order (<see cref="QDictOrder"/>), and QEMU's escapes (\uXXXX in upper case for
/// everything outside printable ASCII). No reflection anywhere (NativeAOT).
/// </summary>
public static class QmpJson
{
    /// <summary>Parses one complete JSON value with the reader json: filenames use (<see cref="JsonOptions.Parse"/>).</summary>
    /// <exception cref="QmpException">Malformed JSON, worded like QEMU's <c>JSON parse error, ...</c>.</exception>
    public static OptionValue Parse(ReadOnlySpan<byte> json)
    {
        try
        {
            return JsonOptions.Parse(json);
        }
        catch (JsonSyntaxException e)
        {
            throw QmpException.Generic(e.Message);
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
