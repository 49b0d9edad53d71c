using Vdisk.Collections;
using System.Text;

namespace Vdisk.Options;

/// <summary>
/// A node of a parsed option tree (QEMU's QDict/QList/QString...). Keyval strings give only
/// strings; <c>json:</c> and QMP give typed scalars too.
/// </summary>
public abstract class OptionValue
{
    /// <summary>Renders the value as JSON (for diagnostics and <c>json:</c> round trips).</summary>
    public abstract void WriteJson(StringBuilder sb);

    /// <inheritdoc />
    public override string ToString()
    {
        var sb = new StringBuilder();
        WriteJson(sb);
        return sb.ToString();
    }

    internal static void WriteJsonString(StringBuilder sb, string s)
    {
        sb.Append('"');
        foreach (char c in s)
        {
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                default:
                    if (c < 0x20) sb.Append($"\\u{(int)c:x4}");
                    else sb.Append(c);
                    break;
            }
        }
        sb.Append('"');
    }
}

/// <summary>The JSON type a scalar came with.</summary>
public enum ScalarKind
{
    /// <summary>A string (every keyval value).</summary>
    String,
    /// <summary>A JSON number.</summary>
    Number,
    /// <summary>A JSON true/false.</summary>
    Bool,
    /// <summary>JSON null.</summary>
    Null,
}

/// <summary>A leaf value.</summary>
public sealed class OptionScalar(string text, ScalarKind kind = ScalarKind.String) : OptionValue
{
    /// <summary>The value as text ("on", "65536", "true", "null").</summary>
    public string Text { get; } = text;

    /// <summary>Its JSON type.</summary>
    public ScalarKind Kind { get; } = kind;

    /// <inheritdoc />
    public override void WriteJson(StringBuilder sb)
    {
        if (Kind == ScalarKind.String) WriteJsonString(sb, Text);
        else sb.Append(Text);
    }
}

/// <summary>An ordered list (from numeric keyval fragments or JSON arrays).</summary>
public sealed class OptionList : OptionValue
{
    /// <summary>The elements.</summary>
    public List<OptionValue> Items { get; } = new();

    /// <inheritdoc />
    public override void WriteJson(StringBuilder sb)
    {
        sb.Append('[');
        for (int i = 0; i < Items.Count; i++)
        {
            if (i > 0) sb.Append(", ");
            Items[i].WriteJson(sb);
        }
        sb.Append(']');
    }
}

/// <summary>An ordered dictionary of options (QDict); later puts of a key replace earlier ones.</summary>
public sealed class OptionDict : OptionValue
{
    private readonly List<KeyValuePair<string, OptionValue>> _entries = new();

    /// <summary>The keys and values in insertion order.</summary>
    public ListView<KeyValuePair<string, OptionValue>> Entries => new(_entries);

    /// <summary>Number of keys.</summary>
    public int Count => _entries.Count;

    /// <summary>The value of <paramref name="key"/>, or null.</summary>
    public OptionValue? this[string key]
    {
        get
        {
            int i = IndexOf(key);
            return i < 0 ? null : _entries[i].Value;
        }
    }

    /// <summary>Sets <paramref name="key"/>, keeping its original position if it existed.</summary>
    public void Set(string key, OptionValue value)
    {
        int i = IndexOf(key);
        if (i < 0) _entries.Add(new(key, value));
        else _entries[i] = new(key, value);
    }

    /// <summary>Sets a string value.</summary>
    public void Set(string key, string value) => Set(key, new OptionScalar(value));

    /// <summary>True when the key exists.</summary>
    public bool Contains(string key) => IndexOf(key) >= 0;

    /// <summary>Removes a key; true if it was there.</summary>
    public bool Remove(string key)
    {
        int i = IndexOf(key);
        if (i < 0) return false;
        _entries.RemoveAt(i);
        return true;
    }

    /// <summary>A deep copy.</summary>
    public OptionDict Clone()
    {
        var copy = new OptionDict();
        foreach (var (k, v) in _entries) copy.Set(k, CloneValue(v));
        return copy;
    }

    private static OptionValue CloneValue(OptionValue v) => v switch
    {
        OptionDict d => d.Clone(),
        OptionList l => CloneList(l),
        _ => v,
    };

    private static OptionList CloneList(OptionList l)
    {
        var copy = new OptionList();
        foreach (var item in l.Items) copy.Items.Add(CloneValue(item));
        return copy;
    }

    private int IndexOf(string key)
    {
        for (int i = 0; i < _entries.Count; i++)
            if (_entries[i].Key == key) return i;
        return -1;
    }

    /// <summary>
    /// Flattens nested dictionaries into dotted keys (qdict_flatten), e.g. <c>file.filename</c>.
    /// </summary>
    public IEnumerable<KeyValuePair<string, OptionValue>> Flatten(string prefix = "")
    {
        foreach (var (k, v) in _entries)
        {
            string key = prefix.Length == 0 ? k : prefix + "." + k;
            if (v is OptionDict d)
            {
                foreach (var kv in d.Flatten(key)) yield return kv;
            }
            else
            {
                yield return new(key, v);
            }
        }
    }

    /// <inheritdoc />
    public override void WriteJson(StringBuilder sb)
    {
        sb.Append('{');
        for (int i = 0; i < _entries.Count; i++)
        {
            if (i > 0) sb.Append(", ");
            WriteJsonString(sb, _entries[i].Key);
            sb.Append(": ");
            _entries[i].Value.WriteJson(sb);
        }
        sb.Append('}');
    }
}

/// <summary>A malformed option, worded like QEMU's error for it.</summary>
public sealed class OptionException(string message) : Exception(message);
