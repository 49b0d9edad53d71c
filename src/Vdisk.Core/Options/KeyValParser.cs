using System.Text;

namespace Vdisk.Options;

/// <summary>Which of QEMU's two key=value dialects to follow.</summary>
public enum KeyValDialect
{
    /// <summary>
    /// util/keyval.c (<c>--blockdev</c>, <c>--export</c>, <c>--nbd-server</c>): every key needs
    /// <c>=</c>, keys are QAPI names or indexes, numeric fragments make lists.
    /// </summary>
    Keyval,

    /// <summary>
    /// QemuOpts (<c>--image-opts</c> of qemu-img and qemu-io): a bare key means <c>key=on</c>
    /// (deprecated, with a warning), and nested keys are crumpled afterwards.
    /// </summary>
    QemuOpts,
}

/// <summary>
/// Parses QEMU's <c>key=value,key.sub=value</c> strings into an <see cref="OptionDict"/> tree.
/// Dotted keys nest, <c>,,</c> is a literal comma, and the last value of a repeated key wins.
/// </summary>
public static class KeyValParser
{
    /// <summary>Parses <paramref name="text"/>.</summary>
    /// <param name="text">The option string.</param>
    /// <param name="dialect">Keyval or QemuOpts rules.</param>
    /// <param name="impliedKey">The key a leading bare value belongs to (<c>driver</c> for --blockdev, <c>type</c> for --export).</param>
    /// <param name="warn">Receives deprecation warnings (QemuOpts short-form booleans).</param>
    public static OptionDict Parse(string text, KeyValDialect dialect = KeyValDialect.Keyval, string? impliedKey = null,
        Action<string>? warn = null)
    {
        var root = new OptionDict();
        int pos = 0;
        bool first = true;
        while (pos < text.Length)
        {
            int keyStart = pos;
            while (pos < text.Length && text[pos] != '=' && text[pos] != ',') pos++;
            string key = text[keyStart..pos];
            string value;
            if (pos < text.Length && text[pos] == '=')
            {
                pos++;
                value = ReadValue(text, ref pos);
            }
            else if (first && impliedKey is not null)
            {
                pos = keyStart;
                value = ReadValue(text, ref pos);
                key = impliedKey;
            }
            else if (dialect == KeyValDialect.QemuOpts)
            {
                if (key.Length == 0)
                {
                    if (pos < text.Length) pos++;
                    first = false;
                    continue;
                }
                // QemuOpts short-form booleans: "key" means key=on, "nokey" would mean key=off;
                // QEMU 7.2 treats every bare word as key=on with a deprecation warning.
                warn?.Invoke($"short-form boolean option '{key}' deprecated\nPlease use {key}=on instead");
                value = "on";
            }
            else
            {
                if (key.Length == 0 && pos >= text.Length) break;
                throw new OptionException($"Expected '=' after parameter '{key}'");
            }

            if (pos < text.Length && text[pos] == ',') pos++;
            first = false;
            Put(root, key, value, dialect);
        }
        return dialect == KeyValDialect.Keyval ? (OptionDict)Listify(root, "") : root;
    }

    private static string ReadValue(string text, ref int pos)
    {
        var sb = new StringBuilder();
        while (pos < text.Length)
        {
            char c = text[pos];
            if (c == ',')
            {
                if (pos + 1 < text.Length && text[pos + 1] == ',')
                {
                    sb.Append(',');
                    pos += 2;
                    continue;
                }
                break;
            }
            sb.Append(c);
            pos++;
        }
        return sb.ToString();
    }

    private static void Put(OptionDict root, string key, string value, KeyValDialect dialect)
    {
        string[] fragments = key.Split('.');
        foreach (string fragment in fragments)
        {
            if (!IsValidFragment(fragment, dialect))
                throw new OptionException($"Invalid parameter '{key}'");
        }

        var current = root;
        for (int i = 0; i < fragments.Length - 1; i++)
        {
            var existing = current[fragments[i]];
            if (existing is OptionDict d)
            {
                current = d;
            }
            else if (existing is null)
            {
                var next = new OptionDict();
                current.Set(fragments[i], next);
                current = next;
            }
            else
            {
                throw Inconsistent(string.Join('.', fragments, 0, i + 1), dialect);
            }
        }
        string leaf = fragments[^1];
        if (current[leaf] is OptionDict)
            throw Inconsistent(key, dialect);
        current.Set(leaf, value);
    }

    private static OptionException Inconsistent(string prefix, KeyValDialect dialect) => dialect == KeyValDialect.Keyval
        ? new OptionException($"Parameters '{prefix}.*' used inconsistently")
        : new OptionException("Cannot reference an existing block device with additional options or a new filename");

    private static bool IsValidFragment(string fragment, KeyValDialect dialect)
    {
        if (fragment.Length == 0 || fragment.Length > 127) return false;
        if (dialect == KeyValDialect.QemuOpts) return true;
        if (IsIndex(fragment)) return true;
        if (!char.IsAsciiLetter(fragment[0])) return false;
        foreach (char c in fragment)
            if (!(char.IsAsciiLetterOrDigit(c) || c == '-' || c == '_')) return false;
        return true;
    }

    /// <summary>A key made of digits only (a list index). Spans, not LINQ: every --blockdev goes through here at start-up.</summary>
    private static bool IsIndex(string key) => !key.AsSpan().ContainsAnyExceptInRange('0', '9');

    /// <summary>keyval_listify: dictionaries whose keys are all indexes become lists without gaps.</summary>
    private static OptionValue Listify(OptionDict dict, string path)
    {
        var result = new OptionDict();
        foreach (var (k, v) in dict.Entries)
        {
            string childPath = path.Length == 0 ? k : path + "." + k;
            result.Set(k, v is OptionDict d ? Listify(d, childPath) : v);
        }
        if (result.Count == 0) return result;
        bool allIndexes = true, anyIndex = false;
        foreach (var (key, _) in result.Entries)
        {
            bool index = IsIndex(key);
            allIndexes &= index;
            anyIndex |= index;
        }
        if (!anyIndex) return result;
        if (!allIndexes) throw new OptionException($"Parameters '{path}.*' used inconsistently");
        var list = new OptionList();
        for (int i = 0; i < result.Count; i++)
        {
            var item = result[i.ToString(System.Globalization.CultureInfo.InvariantCulture)]
                ?? throw new OptionException($"Parameter '{path}.{i}' missing");
            list.Items.Add(item);
        }
        return path.Length == 0 ? result : list;
    }
}
