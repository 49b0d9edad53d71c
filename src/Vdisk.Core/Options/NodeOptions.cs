using System.Globalization;

namespace Vdisk.Options;

/// <summary>
/// Reads the options of one block node, remembering which keys were used so that leftovers can
/// be reported the way QEMU does (<c>Block format 'raw' does not support the option 'bogus'</c>).
/// </summary>
public sealed class NodeOptions
{
    private readonly OptionDict _dict;
    private readonly HashSet<string> _used = new();

    /// <summary>Wraps a node's option dictionary.</summary>
    public NodeOptions(OptionDict dict) => _dict = dict;

    /// <summary>The underlying dictionary.</summary>
    public OptionDict Dictionary => _dict;

    /// <summary>True when the key is present.</summary>
    public bool Has(string key) => _dict.Contains(key);

    /// <summary>Takes any value.</summary>
    public OptionValue? Take(string key)
    {
        _used.Add(key);
        return _dict[key];
    }

    /// <summary>Takes a string (numbers and booleans are given as text).</summary>
    public string? TakeString(string key)
    {
        var v = Take(key);
        return v switch
        {
            null => null,
            OptionScalar { Kind: ScalarKind.Null } => null,
            OptionScalar s => s.Text,
            _ => throw new OptionException($"Invalid parameter type for '{key}', expected: string"),
        };
    }

    /// <summary>Takes an on/off value (also yes/no, true/false).</summary>
    public bool? TakeBool(string key)
    {
        var v = Take(key);
        if (v is null) return null;
        if (v is OptionScalar s)
        {
            bool? parsed = ParseBool(s.Text);
            if (parsed is not null) return parsed;
        }
        throw new OptionException($"Parameter '{key}' expects 'on' or 'off'");
    }

    /// <summary>qapi_bool_parse.</summary>
    public static bool? ParseBool(string text) => text switch
    {
        "on" or "yes" or "true" or "y" => true,
        "off" or "no" or "false" or "n" => false,
        _ => null,
    };

    /// <summary>Takes a size with QEMU's suffixes (QemuOpts' size type and its messages).</summary>
    public ulong? TakeSize(string key)
    {
        var v = Take(key);
        if (v is null) return null;
        ulong n = 0;
        var status = v is OptionScalar s ? SizeParser.Parse(s.Text, out n) : SizeParseStatus.Invalid;
        return status switch
        {
            SizeParseStatus.Ok => n,
            SizeParseStatus.OutOfRange => throw new OptionException($"Value '{((OptionScalar)v).Text}' is out of range for parameter '{key}'"),
            // QEMU adds two lines on the suffixes; an open error stays one line here.
            _ => throw new OptionException($"Parameter '{key}' expects a non-negative number below 2^64"),
        };
    }

    /// <summary>Takes a number (QemuOpts' number type: qemu_strtou64, base 0).</summary>
    public ulong? TakeNumber(string key)
    {
        var v = Take(key);
        if (v is null) return null;
        ulong n = 0;
        var status = v is OptionScalar s ? QemuNumber.ParseUnsigned(s.Text, 0, out n) : QemuNumberStatus.Invalid;
        return status switch
        {
            QemuNumberStatus.Ok => n,
            QemuNumberStatus.OutOfRange => throw new OptionException($"Value '{((OptionScalar)v).Text}' is too large for parameter '{key}'"),
            _ => throw new OptionException($"Parameter '{key}' expects a number"),
        };
    }

    /// <summary>Takes an integer.</summary>
    public long? TakeInt(string key)
    {
        var v = Take(key);
        if (v is null) return null;
        if (v is OptionScalar s && long.TryParse(s.Text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long n)) return n;
        throw new OptionException($"Parameter '{key}' expects an integer");
    }

    /// <summary>Takes a nested dictionary (e.g. <c>cache</c>).</summary>
    public OptionDict? TakeDict(string key)
    {
        var v = Take(key);
        return v switch
        {
            null => null,
            OptionDict d => d,
            _ => throw new OptionException($"Invalid parameter type for '{key}', expected: object"),
        };
    }

    /// <summary>Keys present but never taken, in insertion order.</summary>
    /// <remarks>A loop into a list, not LINQ: every driver's open asks (see <see cref="EnsureAllUsed"/>).</remarks>
    public List<string> Unused
    {
        get
        {
            var keys = new List<string>();
            foreach (var (key, _) in _dict.Entries)
                if (!_used.Contains(key)) keys.Add(key);
            return keys;
        }
    }

    /// <summary>Throws QEMU's error for the first key the driver did not use.</summary>
    /// <param name="driver">Driver name.</param>
    /// <param name="isProtocol">Protocol drivers word it "Block protocol 'file' doesn't support".</param>
    public void EnsureAllUsed(string driver, bool isProtocol)
    {
        foreach (var key in Unused)
        {
            string shown = _dict[key] is OptionDict d ? key + "." + (d.Flatten().FirstOrDefault().Key ?? "") : key;
            throw new OptionException(isProtocol
                ? $"Block protocol '{driver}' doesn't support the option '{shown}'"
                : $"Block format '{driver}' does not support the option '{shown}'");
        }
    }
}
