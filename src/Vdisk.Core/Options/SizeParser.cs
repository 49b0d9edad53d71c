using System.Globalization;

namespace Vdisk.Options;

/// <summary>
/// QEMU's qemu_strtosz: a non-negative number with an optional fraction and a binary suffix
/// (B, K, M, G, T, P, E; case-insensitive), or a hexadecimal number without suffix.
/// </summary>
public static class SizeParser
{
    /// <summary>Parses <paramref name="text"/>; false when malformed or 2^64 or more.</summary>
    /// <param name="text">The text.</param>
    /// <param name="defaultSuffix">Unit of a number without suffix: 'B' (bytes), or 'M' as qemu-img resize uses for none.</param>
    /// <param name="value">The size in bytes.</param>
    public static bool TryParse(string text, out ulong value, char defaultSuffix = 'B')
    {
        value = 0;
        text = text.Trim();
        if (text.Length == 0 || text[0] == '-' || text[0] == '+') return false;
        if (text.StartsWith("0x", StringComparison.OrdinalIgnoreCase))
            return ulong.TryParse(text.AsSpan(2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out value);

        int end = 0;
        while (end < text.Length && (char.IsAsciiDigit(text[end]) || text[end] == '.')) end++;
        if (end == 0) return false;
        string number = text[..end];
        string suffix = text[end..];
        ulong multiplier;
        if (suffix.Length == 0) multiplier = Multiplier(defaultSuffix);
        else if (suffix.Length == 1) multiplier = Multiplier(suffix[0]);
        else return false;
        if (multiplier == 0) return false;

        if (number.Contains('.'))
        {
            // A fraction needs a suffix larger than a byte, as in QEMU.
            if (!decimal.TryParse(number, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out decimal d)) return false;
            if (multiplier == 1 && d != decimal.Truncate(d)) return false;
            decimal bytes = d * multiplier;
            if (bytes >= 18446744073709551616m) return false;
            value = (ulong)decimal.Truncate(bytes);
            return true;
        }
        if (!ulong.TryParse(number, NumberStyles.None, CultureInfo.InvariantCulture, out ulong n)) return false;
        if (n != 0 && multiplier > ulong.MaxValue / n) return false;
        value = n * multiplier;
        return true;
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
