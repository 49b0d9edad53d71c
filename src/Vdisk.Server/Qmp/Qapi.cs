using System.Globalization;
using Vdisk.Options;

namespace Vdisk.Server.Qmp;

/// <summary>
/// A type of QEMU's QAPI schema, enough of it to check command arguments and command-line
/// option strings the way QEMU's input visitors do, with their messages.
/// </summary>
public abstract class QapiType
{
    /// <summary>The name used in <c>Invalid parameter type for 'X', expected: NAME</c>.</summary>
    public abstract string ExpectedName { get; }
}

/// <summary>Scalar kinds.</summary>
public enum QapiScalarKind
{
    /// <summary>'str'.</summary>
    String,
    /// <summary>'bool'.</summary>
    Bool,
    /// <summary>'int' (int64).</summary>
    Int,
    /// <summary>'uint16'.</summary>
    UInt16,
    /// <summary>'uint32'.</summary>
    UInt32,
    /// <summary>'uint64'.</summary>
    UInt64,
    /// <summary>'any': anything, unchecked.</summary>
    Any,
}

/// <summary>A built-in scalar type.</summary>
public sealed class QapiScalar(QapiScalarKind kind) : QapiType
{
    /// <summary>The kind.</summary>
    public QapiScalarKind Kind { get; } = kind;

    /// <inheritdoc />
    public override string ExpectedName => Kind switch
    {
        QapiScalarKind.String => "string",
        QapiScalarKind.Bool => "boolean",
        QapiScalarKind.Any => "any",
        _ => "integer",
    };

    /// <summary>'str'.</summary>
    public static readonly QapiScalar String = new(QapiScalarKind.String);
    /// <summary>'bool'.</summary>
    public static readonly QapiScalar Bool = new(QapiScalarKind.Bool);
    /// <summary>'int'.</summary>
    public static readonly QapiScalar Int = new(QapiScalarKind.Int);
    /// <summary>'uint16'.</summary>
    public static readonly QapiScalar UInt16 = new(QapiScalarKind.UInt16);
    /// <summary>'uint32'.</summary>
    public static readonly QapiScalar UInt32 = new(QapiScalarKind.UInt32);
    /// <summary>'uint64'.</summary>
    public static readonly QapiScalar UInt64 = new(QapiScalarKind.UInt64);
    /// <summary>'any'.</summary>
    public static readonly QapiScalar Any = new(QapiScalarKind.Any);
}

/// <summary>An enumeration: a string from a fixed set.</summary>
public sealed class QapiEnum(params string[] values) : QapiType
{
    /// <summary>The accepted values.</summary>
    public string[] Values { get; } = values;

    /// <summary>Whether <paramref name="value"/> is one of <see cref="Values"/> (ordinal).</summary>
    public bool Accepts(string value)
    {
        foreach (var v in Values)
            if (v == value) return true;
        return false;
    }

    /// <inheritdoc />
    public override string ExpectedName => "string";
}

/// <summary>An array.</summary>
public sealed class QapiList(QapiType element) : QapiType
{
    /// <summary>The element type.</summary>
    public QapiType Element { get; } = element;

    /// <inheritdoc />
    public override string ExpectedName => "array";
}

/// <summary>A member of a struct.</summary>
/// <param name="Name">The key.</param>
/// <param name="Type">Its type.</param>
/// <param name="Optional">True for '*name' members.</param>
public sealed record QapiMember(string Name, QapiType Type, bool Optional = false);

/// <summary>
/// An object. A flat union is a struct whose <see cref="Discriminator"/> member (an enum) selects
/// further members from <see cref="Variants"/>.
/// </summary>
public sealed class QapiStruct(string name, QapiMember[] members) : QapiType
{
    /// <summary>The type's name.</summary>
    public string Name { get; } = name;

    /// <summary>The base members, in schema order.</summary>
    public QapiMember[] Members { get; } = members;

    /// <summary>For flat unions: the member whose value picks the variant.</summary>
    public string? Discriminator { get; init; }

    /// <summary>For flat unions: the variant's extra members, by discriminator value (null: none).</summary>
    public Func<string, QapiMember[]?>? Variants { get; init; }

    /// <inheritdoc />
    public override string ExpectedName => "object";
}

/// <summary>
/// An alternate of an object type and a string (a node reference), optionally null, such as
/// BlockdevRef and BlockdevRefOrNull.
/// </summary>
public sealed class QapiAlternate(string name, QapiStruct objectType, bool allowNull) : QapiType
{
    /// <summary>The object branch.</summary>
    public QapiStruct ObjectType { get; } = objectType;

    /// <summary>True when JSON null is accepted.</summary>
    public bool AllowNull { get; } = allowNull;

    /// <inheritdoc />
    public override string ExpectedName { get; } = name;
}

/// <summary>
/// QEMU's two input visitors over an option tree. <see cref="Json"/> checks QMP arguments, whose
/// scalars carry JSON types; <see cref="Keyval"/> checks command-line key=value strings, whose
/// scalars are all text, converting them. Both report QEMU's messages with the full dotted
/// path of the parameter, and return the tree with typed scalars.
/// </summary>
public sealed class QapiVisitor
{
    private readonly bool _keyval;

    private QapiVisitor(bool keyval) => _keyval = keyval;

    /// <summary>The QMP input visitor (typed JSON).</summary>
    public static QapiVisitor Json { get; } = new(false);

    /// <summary>The keyval input visitor (strings from the command line).</summary>
    public static QapiVisitor Keyval { get; } = new(true);

    /// <summary>Checks the arguments of a command (an object, possibly empty).</summary>
    /// <exception cref="QmpException">GenericError with QEMU's message.</exception>
    public OptionDict VisitArguments(QapiStruct type, OptionDict? arguments) =>
        VisitStruct(type, arguments ?? new OptionDict(), "");

    /// <summary>Checks one value against <paramref name="type"/>.</summary>
    public OptionValue Visit(QapiType type, OptionValue value, string path) => type switch
    {
        QapiScalar scalar => VisitScalar(scalar, value, path),
        QapiEnum e => VisitEnum(e, value, path),
        QapiList list => VisitList(list, value, path),
        QapiStruct s => value is OptionDict d ? VisitStruct(s, d, path) : throw TypeError(path, s),
        QapiAlternate alt => VisitAlternate(alt, value, path),
        QapiTypeProxy proxy => Visit(proxy.Current, value, path),
        _ => throw new ArgumentOutOfRangeException(nameof(type)),
    };

    private OptionDict VisitStruct(QapiStruct type, OptionDict input, string path)
    {
        var output = new OptionDict();
        var known = new HashSet<string>(StringComparer.Ordinal);
        VisitMembers(type.Members, input, output, known, path);
        if (type.Discriminator is { } discriminator && type.Variants is { } variants)
        {
            // The discriminator was visited as an enum above, so it is a valid value here.
            string tag = ((OptionScalar)output[discriminator]!).Text;
            var extra = variants(tag);
            if (extra is not null) VisitMembers(extra, input, output, known, path);
        }
        foreach (var (key, _) in QDictOrder.Entries(input))
            if (!known.Contains(key)) throw QmpException.Generic($"Parameter '{Join(path, key)}' is unexpected");
        return output;
    }

    private void VisitMembers(QapiMember[] members, OptionDict input, OptionDict output, HashSet<string> known, string path)
    {
        foreach (var member in members)
        {
            known.Add(member.Name);
            var value = input[member.Name];
            if (value is null)
            {
                if (!member.Optional) throw QmpException.Generic($"Parameter '{Join(path, member.Name)}' is missing");
                continue;
            }
            output.Set(member.Name, Visit(member.Type, value, Join(path, member.Name)));
        }
    }

    private OptionValue VisitAlternate(QapiAlternate type, OptionValue value, string path) => value switch
    {
        OptionDict d => VisitStruct(type.ObjectType, d, path),
        // On the command line "null" is how a null reference is spelt (backing=null).
        OptionScalar { Kind: ScalarKind.String, Text: "null" } when _keyval && type.AllowNull => new OptionScalar("null", ScalarKind.Null),
        OptionScalar { Kind: ScalarKind.String } s => s,
        OptionScalar { Kind: ScalarKind.Null } n when type.AllowNull => n,
        _ => throw TypeError(path, type),
    };

    private OptionValue VisitList(QapiList type, OptionValue value, string path)
    {
        if (value is not OptionList list) throw TypeError(path, type);
        var output = new OptionList();
        for (int i = 0; i < list.Items.Count; i++)
            output.Items.Add(Visit(type.Element, list.Items[i], $"{path}[{i}]"));
        return output;
    }

    private OptionValue VisitEnum(QapiEnum type, OptionValue value, string path)
    {
        if (value is not OptionScalar { Kind: ScalarKind.String } s) throw TypeError(path, type);
        // QEMU names only the member itself here, not its full path.
        if (!type.Accepts(s.Text)) throw QmpException.Generic($"Parameter '{Leaf(path)}' does not accept value '{s.Text}'");
        return s;
    }

    private OptionValue VisitScalar(QapiScalar type, OptionValue value, string path)
    {
        if (type.Kind == QapiScalarKind.Any) return value;
        if (value is not OptionScalar s || s.Kind == ScalarKind.Null) throw TypeError(path, type);
        if (_keyval && s.Kind == ScalarKind.String) return ConvertKeyval(type, s.Text, path);
        switch (type.Kind)
        {
            case QapiScalarKind.String:
                return s.Kind == ScalarKind.String ? s : throw TypeError(path, type);
            case QapiScalarKind.Bool:
                return s.Kind == ScalarKind.Bool ? s : throw TypeError(path, type);
            case QapiScalarKind.Int:
                if (s.Kind == ScalarKind.Number && long.TryParse(s.Text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out _)) return s;
                throw TypeError(path, type);
            default:
                if (s.Kind != ScalarKind.Number) throw Expects(path, "uint64");
                ulong n;
                if (ulong.TryParse(s.Text, NumberStyles.None, CultureInfo.InvariantCulture, out ulong u)) n = u;
                // Negative numbers are taken modulo 2^64 for backward compatibility, as QEMU does.
                else if (long.TryParse(s.Text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long l)) n = unchecked((ulong)l);
                else throw Expects(path, "uint64");
                CheckRange(type.Kind, n, path);
                return new OptionScalar(n.ToString(CultureInfo.InvariantCulture), ScalarKind.Number);
        }
    }

    private static OptionScalar ConvertKeyval(QapiScalar type, string text, string path)
    {
        switch (type.Kind)
        {
            case QapiScalarKind.String:
                return new OptionScalar(text);
            case QapiScalarKind.Bool:
                return NodeOptions.ParseBool(text) is { } b
                    ? new OptionScalar(b ? "true" : "false", ScalarKind.Bool)
                    : throw QmpException.Generic($"Parameter '{path}' expects 'on' or 'off'");
            case QapiScalarKind.Int:
                if (!TryParseInteger(text, out Int128 value) || value > long.MaxValue) throw Expects(path, "integer");
                return new OptionScalar(((long)value).ToString(CultureInfo.InvariantCulture), ScalarKind.Number);
            default:
                if (!TryParseInteger(text, out Int128 v)) throw Expects(path, "integer");
                // qemu_strtou64 takes negative numbers modulo 2^64.
                ulong n = v < 0 ? unchecked((ulong)(long)v) : (ulong)v;
                CheckRange(type.Kind, n, path);
                return new OptionScalar(n.ToString(CultureInfo.InvariantCulture), ScalarKind.Number);
        }
    }

    /// <summary>qemu_strtoi64/strtou64 with base 0: decimal, 0x hex, leading-0 octal, optional sign; -2^63 to 2^64-1.</summary>
    internal static bool TryParseInteger(string text, out Int128 value)
    {
        value = 0;
        string t = text.Trim();
        bool negative = t.StartsWith('-');
        string digits = negative || t.StartsWith('+') ? t[1..] : t;
        ulong magnitude;
        try
        {
            if (digits.StartsWith("0x", StringComparison.OrdinalIgnoreCase) && digits.Length > 2)
                magnitude = ulong.Parse(digits.AsSpan(2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture);
            else if (digits.Length > 1 && digits[0] == '0' && digits.All(c => c is >= '0' and <= '7'))
                magnitude = Convert.ToUInt64(digits, 8);
            else if (digits.Length > 0 && digits.All(char.IsAsciiDigit))
                magnitude = ulong.Parse(digits, NumberStyles.None, CultureInfo.InvariantCulture);
            else return false;
        }
        catch (Exception e) when (e is OverflowException or FormatException)
        {
            return false;
        }
        value = negative ? -(Int128)magnitude : magnitude;
        return value >= long.MinValue;
    }

    private static void CheckRange(QapiScalarKind kind, ulong n, string path)
    {
        if (kind == QapiScalarKind.UInt32 && n > uint.MaxValue) throw Expects(path, "uint32_t");
        if (kind == QapiScalarKind.UInt16 && n > ushort.MaxValue) throw Expects(path, "uint16_t");
    }

    private static QmpException TypeError(string path, QapiType type) =>
        QmpException.Generic($"Invalid parameter type for '{(path.Length == 0 ? "null" : path)}', expected: {type.ExpectedName}");

    private static QmpException Expects(string path, string what) => QmpException.Generic($"Parameter '{path}' expects {what}");

    private static string Join(string path, string key) => path.Length == 0 ? key : path + "." + key;

    private static string Leaf(string path)
    {
        int dot = path.LastIndexOf('.');
        return dot < 0 ? path : path[(dot + 1)..];
    }
}
