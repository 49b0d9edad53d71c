namespace Vdisk.Options;

/// <summary>What a strtol-style scan found.</summary>
public enum QemuNumberStatus
{
    /// <summary>A number that fits.</summary>
    Ok,
    /// <summary>No digits, or (for a whole-string parse) something after them: -EINVAL.</summary>
    Invalid,
    /// <summary>Digits that do not fit: -ERANGE.</summary>
    OutOfRange,
}

/// <summary>One scan: its status, the value, and where the number ended.</summary>
public readonly record struct QemuNumberScan(QemuNumberStatus Status, ulong Value, int End);

/// <summary>
/// QEMU's qemu_strtol / qemu_strtou64 (util/cutils.c), which wrap strtol and strtoull: leading
/// white space, an optional sign, base 0 meaning 0x-hex, 0-octal or decimal. strtoull takes a
/// '-' and negates in unsigned arithmetic ("-1" is 2^64-1), as QEMU then does.
/// </summary>
public static class QemuNumber
{
    /// <summary>qemu_strtol(text, NULL, base): the whole string must be the number.</summary>
    public static QemuNumberStatus ParseLong(string text, int numberBase, out long value)
    {
        value = 0;
        var scan = Scan(text, 0, numberBase, signed: true);
        if (scan.Status == QemuNumberStatus.Invalid || scan.End != text.Length) return QemuNumberStatus.Invalid;
        if (scan.Status == QemuNumberStatus.Ok) value = (long)scan.Value;
        return scan.Status;
    }

    /// <summary>qemu_strtou64(text, NULL, base): the whole string must be the number.</summary>
    public static QemuNumberStatus ParseUnsigned(string text, int numberBase, out ulong value)
    {
        value = 0;
        var scan = ScanUnsigned(text, 0, numberBase);
        if (scan.Status == QemuNumberStatus.Invalid) return scan.Status;
        if (scan.End != text.Length) return QemuNumberStatus.Invalid;
        if (scan.Status == QemuNumberStatus.Ok) value = scan.Value;
        return scan.Status;
    }

    /// <summary>strtoull from <paramref name="start"/>; End is where the digits stopped.</summary>
    public static QemuNumberScan ScanUnsigned(string text, int start, int numberBase) => Scan(text, start, numberBase, signed: false);

    private static QemuNumberScan Scan(string text, int start, int numberBase, bool signed)
    {
        int p = start;
        while (p < text.Length && text[p] is ' ' or '\t' or '\n' or '\v' or '\f' or '\r') p++;
        bool negative = false;
        if (p < text.Length && text[p] is '+' or '-')
        {
            negative = text[p] == '-';
            p++;
        }
        if ((numberBase == 0 || numberBase == 16) && p + 1 < text.Length && text[p] == '0' && text[p + 1] is 'x' or 'X'
            && p + 2 < text.Length && Uri.IsHexDigit(text[p + 2]))
        {
            p += 2;
            numberBase = 16;
        }
        else if (numberBase == 0)
        {
            numberBase = p < text.Length && text[p] == '0' ? 8 : 10;
        }
        int digitsStart = p;
        UInt128 magnitude = 0;
        bool overflow = false;
        while (p < text.Length && DigitValue(text[p]) is int d && d < numberBase)
        {
            magnitude = magnitude * (uint)numberBase + (uint)d;
            if (magnitude > ulong.MaxValue) overflow = true;
            if (overflow) magnitude = ulong.MaxValue;
            p++;
        }
        if (p == digitsStart) return new(QemuNumberStatus.Invalid, 0, start);
        if (signed)
        {
            UInt128 limit = negative ? (UInt128)long.MaxValue + 1 : long.MaxValue;
            if (overflow || magnitude > limit) return new(QemuNumberStatus.OutOfRange, 0, p);
            long v = negative ? (long)-(Int128)magnitude : (long)magnitude;
            return new(QemuNumberStatus.Ok, (ulong)v, p);
        }
        if (overflow) return new(QemuNumberStatus.OutOfRange, 0, p);
        ulong u = (ulong)magnitude;
        return new(QemuNumberStatus.Ok, negative ? unchecked(0UL - u) : u, p);
    }

    private static int? DigitValue(char c) => c switch
    {
        >= '0' and <= '9' => c - '0',
        >= 'a' and <= 'z' => c - 'a' + 10,
        >= 'A' and <= 'Z' => c - 'A' + 10,
        _ => null,
    };
}
