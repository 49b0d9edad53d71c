using System.Globalization;

namespace Vdisk.Output;

/// <summary>QEMU's text formatting helpers (util/cutils.c) that several tools' outputs share.</summary>
public static class QemuText
{
    private static readonly string[] SizeSuffixes = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];

    /// <summary>size_to_str: three significant digits and a binary unit ("68 KiB", "1.05 MiB").</summary>
    public static string SizeToStr(long value)
    {
        // frexp's exponent of value / (1000.0 / 1024.0); C's integer division truncates towards 0.
        double scaled = value / (1000.0 / 1024.0);
        int exponent = scaled == 0 ? 0 : Math.ILogB(scaled) + 1;
        int i = Math.Max(0, (exponent - 1) / 10);
        return FormatG3(value / (double)(1L << (i * 10))) + " " + SizeSuffixes[i] + "B";
    }

    /// <summary>
    /// C's <c>%0.3g</c> for a value in [0, 1000]: three significant digits, trailing zeros dropped,
    /// and the exponent form once rounding reaches a fourth digit ("1e+03").
    /// </summary>
    private static string FormatG3(double v)
    {
        if (v == 0) return "0";
        // size_to_str's values lie in [0.97, 1000); others are not formatted here.
        if (!(v >= 0.1 && v < 1000)) return v.ToString("G3", CultureInfo.InvariantCulture);
        // The decimal exponent x of the value picks %f's precision 2 - x.
        int x = v < 1 ? -1 : v < 10 ? 0 : v < 100 ? 1 : 2;
        ulong digits = RoundScaled(v, 2 - x);
        if (digits < 1000) return TrimFraction(Fixed(digits, 2 - x));
        // Rounding carried into a fourth digit: the exponent is one more, and at 3 %g takes the
        // exponent form.
        return x == 2 ? "1e+03" : TrimFraction(Fixed(RoundScaled(v, 1 - x), 1 - x));
    }

    /// <summary>
    /// C's <c>%.{decimals}f</c>: the exact binary value rounded to <paramref name="decimals"/>
    /// places, ties to even, as glibc prints it. Written out because the runtime's double
    /// formatting costs a one-shot command its first use (tables, culture data: ~2% of
    /// <c>vdisk io -c 'read 0 4k'</c>), and every qemu-io report line needs it.
    /// </summary>
    public static string Fixed(double value, int decimals)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(decimals);
        if (decimals > 9 || !double.IsFinite(value) || Math.Abs(value) >= 1e9)
            return value.ToString("F" + decimals.ToString(CultureInfo.InvariantCulture), CultureInfo.InvariantCulture);
        string text = Fixed(RoundScaled(Math.Abs(value), decimals), decimals);
        return double.IsNegative(value) ? "-" + text : text;
    }

    /// <summary><paramref name="value"/> (non-negative, below 1e9) times 10^decimals, rounded exactly, ties to even.</summary>
    private static ulong RoundScaled(double value, int decimals)
    {
        long bits = BitConverter.DoubleToInt64Bits(value);
        int biased = (int)(bits >> 52) & 0x7FF;
        ulong mantissa = (ulong)bits & ((1UL << 52) - 1);
        if (biased != 0) mantissa |= 1UL << 52;
        int exponent = (biased == 0 ? 1 : biased) - 1075; // value = mantissa * 2^exponent
        UInt128 product = (UInt128)mantissa * Pow10(decimals);
        if (exponent >= 0) return (ulong)(product << exponent);
        int shift = -exponent;
        if (shift >= 127) return 0;
        UInt128 quotient = product >> shift;
        UInt128 remainder = product - (quotient << shift);
        UInt128 half = (UInt128)1 << (shift - 1);
        if (remainder > half || (remainder == half && (quotient & 1) == 1)) quotient++;
        return (ulong)quotient;
    }

    private static ulong Pow10(int n)
    {
        ulong p = 1;
        for (int i = 0; i < n; i++) p *= 10;
        return p;
    }

    /// <summary><paramref name="scaled"/> / 10^decimals written with exactly <paramref name="decimals"/> places.</summary>
    private static string Fixed(ulong scaled, int decimals)
    {
        if (decimals == 0) return scaled.ToString(CultureInfo.InvariantCulture);
        ulong unit = Pow10(decimals);
        return (scaled / unit).ToString(CultureInfo.InvariantCulture) + "." + (scaled % unit).ToString(CultureInfo.InvariantCulture).PadLeft(decimals, '0');
    }

    private static string TrimFraction(string text) => text.Contains('.') ? text.TrimEnd('0').TrimEnd('.') : text;
}
