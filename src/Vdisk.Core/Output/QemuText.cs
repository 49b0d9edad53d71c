using System.Globalization;

namespace Vdisk.Output;

/// <summary>QEMU's text formatting helpers (util/cutils.c) that several tools' outputs share.</summary>
public static class QemuText
{
    /// <summary>size_to_str: three significant digits and a binary unit ("68 KiB", "1.05 MiB").</summary>
    public static string SizeToStr(long value)
    {
        string[] suffixes = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
        int exponent = FrexpExponent(value / (1000.0 / 1024.0));
        int i = (exponent - 1) / 10;
        if (i < 0) i = 0;
        double div = Math.Pow(2, i * 10);
        return FormatG3(value / div) + " " + suffixes[i] + "B";
    }

    private static int FrexpExponent(double x)
    {
        if (x == 0) return 0;
        return Math.ILogB(x) + 1;
    }

    private static string FormatG3(double v)
    {
        // C's %0.3g: three significant digits, trailing zeros dropped.
        if (v == 0) return "0";
        int digitsBeforePoint = (int)Math.Floor(Math.Log10(Math.Abs(v))) + 1;
        int decimals = Math.Max(0, 3 - digitsBeforePoint);
        string s = Math.Round(v, decimals, MidpointRounding.ToEven).ToString("F" + decimals, CultureInfo.InvariantCulture);
        if (s.Contains('.')) s = s.TrimEnd('0').TrimEnd('.');
        return s;
    }
}
