using System.Globalization;

namespace Vdisk.Options;

/// <summary>What <see cref="SizeParser.Parse"/> made of a text.</summary>
public enum SizeParseStatus
{
    /// <summary>A valid size.</summary>
    Ok,
    /// <summary>Not a size (qemu_strtosz's -EINVAL).</summary>
    Invalid,
    /// <summary>A size of 2^64 bytes or more (qemu_strtosz's -ERANGE).</summary>
    OutOfRange,
}

/// <summary>
/// QEMU's qemu_strtosz: a decimal number with an optional fraction and a binary suffix (B, K, M,
/// G, T, P, E; case-insensitive), or a hexadecimal number without fraction (a suffix on it is
/// accepted with QEMU 7.2's deprecation warning). Leading white space and a '+' are allowed
/// (strtoull), anything after the suffix is not.
/// </summary>
public static class SizeParser
{
    /// <summary>Parses <paramref name="text"/>; false when malformed or 2^64 or more.</summary>
    /// <param name="text">The text.</param>
    /// <param name="value">The size in bytes.</param>
    /// <param name="defaultSuffix">Unit of a number without suffix: 'B' (bytes), or 'M' as qemu-img resize uses for none.</param>
    public static bool TryParse(string text, out ulong value, char defaultSuffix = 'B') =>
        Parse(text, out value, defaultSuffix) == SizeParseStatus.Ok;

    /// <summary>Parses <paramref name="text"/>, telling malformed input from sizes that are too large.</summary>
    public static SizeParseStatus Parse(string text, out ulong value, char defaultSuffix = 'B')
    {
        value = 0;
        var integral = QemuNumber.ScanUnsigned(text, 0, 10);
        if (integral.Status == QemuNumberStatus.Invalid) return SizeParseStatus.Invalid;
        if (integral.Status == QemuNumberStatus.OutOfRange)
            return integral.End == text.Length ? SizeParseStatus.OutOfRange : SizeParseStatus.Invalid;
        if (text.AsSpan(0, integral.End).Contains('-')) return SizeParseStatus.Invalid;
        ulong val = integral.Value;
        ulong fraction = 0;
        bool isHex = false;
        int end = integral.End;
        if (val == 0 && end < text.Length && text[end] is 'x' or 'X')
        {
            var hex = QemuNumber.ScanUnsigned(text, 0, 16);
            if (hex.Status == QemuNumberStatus.Invalid) return SizeParseStatus.Invalid;
            end = hex.End;
            if (end < text.Length && text[end] == '.') return SizeParseStatus.Invalid;
            if (hex.Status == QemuNumberStatus.OutOfRange) return end == text.Length ? SizeParseStatus.OutOfRange : SizeParseStatus.Invalid;
            val = hex.Value;
            isHex = true;
        }
        else if (end < text.Length && text[end] == '.')
        {
            // strtod from the point: digits, and an exponent makes the whole input invalid.
            int digitsEnd = end + 1;
            while (digitsEnd < text.Length && char.IsAsciiDigit(text[digitsEnd])) digitsEnd++;
            if (digitsEnd == end + 1)
            {
                end++; // "1.k": no fraction digits, the point is skipped
            }
            else
            {
                if (HasExponent(text, digitsEnd)) return SizeParseStatus.Invalid;
                // A 64-bit fixed-point fraction; one that rounds to 1.0 as a double converts to 0
                // on x86-64 (QEMU's cast), where .NET would saturate.
                double scaled = double.Parse("0" + text[end..digitsEnd], NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture) * 18446744073709551616.0;
                fraction = scaled >= 18446744073709551616.0 ? 0 : (ulong)scaled;
                end = digitsEnd;
            }
        }
        ulong mul = end < text.Length ? Multiplier(text[end]) : 0;
        if (mul > 0)
        {
            if (isHex) Diagnostics.Warn($"Using a multiplier suffix on hex numbers is deprecated: {text}");
            end++;
        }
        else
        {
            mul = Multiplier(defaultSuffix);
        }
        var status = SizeParseStatus.Ok;
        if (mul == 1)
        {
            if (fraction != 0) return SizeParseStatus.Invalid;
        }
        else
        {
            UInt128 low = (UInt128)fraction * mul;
            UInt128 total = (UInt128)val * mul + (low >> 64) + (((ulong)low) >> 63);
            if (total > ulong.MaxValue) status = SizeParseStatus.OutOfRange;
            else val = (ulong)total;
        }
        if (end < text.Length) return SizeParseStatus.Invalid;
        if (status == SizeParseStatus.Ok) value = val;
        return status;
    }

    /// <summary>True when strtod would read an exponent at <paramref name="pos"/> ("e5", "E-3").</summary>
    private static bool HasExponent(string text, int pos)
    {
        if (pos >= text.Length || text[pos] is not ('e' or 'E')) return false;
        int p = pos + 1;
        if (p < text.Length && text[p] is '+' or '-') p++;
        return p < text.Length && char.IsAsciiDigit(text[p]);
    }

    private static ulong Multiplier(char suffix) => char.ToUpperInvariant(suffix) switch
    {
        'B' => 1UL,
        'K' => 1UL << 10,
        'M' => 1UL << 20,
        'G' => 1UL << 30,
        'T' => 1UL << 40,
        'P' => 1UL << 50,
        'E' => 1UL << 60,
        _ => 0,
    };
}
