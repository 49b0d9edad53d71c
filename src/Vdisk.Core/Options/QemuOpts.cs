using System.Globalization;
using System.Text;

namespace Vdisk.Options;

/// <summary>QemuOptType: how an option's value is parsed.</summary>
public enum QemuOptType
{
    /// <summary>Any text.</summary>
    String,
    /// <summary>on/off (also yes/no, true/false, y/n).</summary>
    Bool,
    /// <summary>qemu_strtou64, base 0.</summary>
    Number,
    /// <summary>qemu_strtosz.</summary>
    Size,
}

/// <summary>One QemuOptDesc: name, type, help text and the default qemu_opts_print shows.</summary>
public sealed record QemuOptDesc(string Name, QemuOptType Type, string Help, string? Default = null);

/// <summary>An error in an option list: QEMU's message and, if any, its hint (ending in a newline).</summary>
public sealed record QemuOptsError(string Message, string? Hint = null)
{
    /// <summary>The hint qemu_opts appends to a malformed size.</summary>
    public const string SizeHint = "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively.\n";
}

/// <summary>
/// A QemuOpts of an options list with descriptors (util/qemu-option.c), as qemu-img uses for
/// <c>-o</c>: <c>key=value</c> items separated by commas (",," is a literal comma in a value),
/// a bare <c>key</c> meaning on and <c>nokey</c> off, values checked against their type when
/// set, unknown names refused, the last value of a repeated name winning.
/// </summary>
public sealed class QemuOpts
{
    private readonly List<QemuOptDesc> _descs;
    private readonly Dictionary<string, (string Text, ulong Number, bool Flag)> _values = new(StringComparer.Ordinal);

    /// <summary>An empty QemuOpts over <paramref name="descs"/> (qemu_opts_append: a name listed twice keeps its first descriptor).</summary>
    public QemuOpts(IEnumerable<QemuOptDesc> descs)
    {
        _descs = new();
        foreach (var d in descs)
            if (!_descs.Any(x => x.Name == d.Name)) _descs.Add(d);
    }

    /// <summary>The descriptors, in list order.</summary>
    public IReadOnlyList<QemuOptDesc> Descriptors => _descs;

    /// <summary>
    /// is_valid_option_list: every comma-separated item non-empty and not starting with a comma,
    /// and no trailing comma (qemu-img checks each <c>-o</c> argument so).
    /// </summary>
    public static bool IsValidOptionList(string text)
    {
        int p = 0;
        while (p < text.Length)
        {
            p = ReadValue(text, p, out string value);
            if ((p < text.Length && ++p == text.Length) || value.Length == 0 || value[0] == ',') return false;
        }
        return true;
    }

    /// <summary>has_help_option: some item of the list is named "help" or "?".</summary>
    public static bool HasHelpOption(string text)
    {
        int p = 0;
        while (p < text.Length)
        {
            p = ReadNameValue(text, p, out string name, out _);
            if (name is "help" or "?") return true;
        }
        return false;
    }

    /// <summary>qemu_opts_do_parse: sets each item in turn; the first error stops the parse.</summary>
    public QemuOptsError? Parse(string text)
    {
        int p = 0;
        while (p < text.Length)
        {
            p = ReadNameValue(text, p, out string name, out string value);
            if (Set(name, value) is { } error) return error;
        }
        return null;
    }

    /// <summary>qemu_opt_set: checks the value against the descriptor; an unknown name is "Invalid parameter".</summary>
    public QemuOptsError? Set(string name, string value)
    {
        var desc = _descs.FirstOrDefault(d => d.Name == name);
        if (desc is null) return new QemuOptsError($"Invalid parameter '{name}'");
        ulong number = 0;
        bool flag = false;
        switch (desc.Type)
        {
            case QemuOptType.Bool:
                if (NodeOptions.ParseBool(value) is not bool b) return new QemuOptsError($"Parameter '{name}' expects 'on' or 'off'");
                flag = b;
                break;
            case QemuOptType.Number:
                switch (QemuNumber.ParseUnsigned(value, 0, out number))
                {
                    case QemuNumberStatus.OutOfRange: return new QemuOptsError($"Value '{value}' is too large for parameter '{name}'");
                    case QemuNumberStatus.Invalid: return new QemuOptsError($"Parameter '{name}' expects a number");
                }
                break;
            case QemuOptType.Size:
                switch (SizeParser.Parse(value, out number))
                {
                    case SizeParseStatus.OutOfRange: return new QemuOptsError($"Value '{value}' is out of range for parameter '{name}'");
                    case SizeParseStatus.Invalid: return new QemuOptsError($"Parameter '{name}' expects a non-negative number below 2^64", QemuOptsError.SizeHint);
                }
                break;
        }
        _values[name] = (value, number, flag);
        return null;
    }

    /// <summary>True when the option was set.</summary>
    public bool Contains(string name) => _values.ContainsKey(name);

    /// <summary>The option's text as given, or null when unset (defaults are not applied).</summary>
    public string? Get(string name) => _values.TryGetValue(name, out var v) ? v.Text : null;

    /// <summary>A size or number option's value, or null when unset.</summary>
    public ulong? GetNumber(string name) => _values.TryGetValue(name, out var v) ? v.Number : null;

    /// <summary>A bool option's value, or null when unset.</summary>
    public bool? GetBool(string name) => _values.TryGetValue(name, out var v) ? v.Flag : null;

    /// <summary>Removes a set option (qemu_opt_unset).</summary>
    public void Remove(string name) => _values.Remove(name);

    /// <summary>
    /// qemu_opts_print with a space separator: every option that is set or has a default, in
    /// list order; sizes and numbers as signed 64-bit numbers, strings with commas doubled.
    /// </summary>
    public string Print()
    {
        var parts = new List<string>();
        foreach (var d in _descs)
        {
            bool set = _values.TryGetValue(d.Name, out var v);
            string? text = set ? v.Text : d.Default;
            if (text is null) continue;
            if (d.Type == QemuOptType.String) parts.Add($"{d.Name}={text.Replace(",", ",,", StringComparison.Ordinal)}");
            else if (d.Type is QemuOptType.Size or QemuOptType.Number && set) parts.Add($"{d.Name}={((long)v.Number).ToString(CultureInfo.InvariantCulture)}");
            else parts.Add($"{d.Name}={text}");
        }
        return string.Join(' ', parts);
    }

    /// <summary>qemu_opts_print_help: the options sorted by name, under <paramref name="title"/>.</summary>
    public string Help(string title)
    {
        var sb = new StringBuilder(title).Append('\n');
        foreach (var d in _descs.OrderBy(d => d.Name, StringComparer.Ordinal))
        {
            string type = d.Type switch
            {
                QemuOptType.Bool => "bool (on/off)",
                QemuOptType.Number => "num",
                QemuOptType.Size => "size",
                _ => "str",
            };
            sb.Append("  ").Append($"{d.Name}=<{type}>".PadRight(22)).Append(" - ").Append(d.Help).Append('\n');
        }
        return sb.ToString();
    }

    /// <summary>get_opt_value: up to the next single comma, ",," read as one comma.</summary>
    private static int ReadValue(string text, int p, out string value)
    {
        var sb = new StringBuilder();
        while (p < text.Length)
        {
            if (text[p] == ',')
            {
                if (p + 1 < text.Length && text[p + 1] == ',') { sb.Append(','); p += 2; continue; }
                break;
            }
            sb.Append(text[p++]);
        }
        value = sb.ToString();
        return p;
    }

    /// <summary>get_opt_name_value without an implied first name: "name=value", or a flag ("name" on, "noname" off).</summary>
    private static int ReadNameValue(string text, int p, out string name, out string value)
    {
        int len = text.AsSpan(p).IndexOfAny('=', ',');
        if (len < 0) len = text.Length - p;
        name = text.Substring(p, len);
        p += len;
        if (p < text.Length && text[p] == '=')
        {
            p = ReadValue(text, p + 1, out value);
        }
        else if (name.StartsWith("no", StringComparison.Ordinal))
        {
            name = name[2..];
            value = "off";
        }
        else
        {
            value = "on";
        }
        if (p < text.Length && text[p] == ',') p++;
        return p;
    }
}
