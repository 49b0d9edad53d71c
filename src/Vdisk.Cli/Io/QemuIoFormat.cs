using System.Globalization;
using Vdisk.Output;

namespace Vdisk.Cli.Io;

/// <summary>qemu-io's number and report formatting (cvtstr, timestr, print_report, dump_buffer).</summary>
internal static class QemuIoFormat
{
    /// <summary>cvtstr: "1 MiB", "1.500 KiB", "512 bytes".</summary>
    public static string Size(double value)
    {
        string suffix;
        const double K = 1024;
        if (value >= K * K * K * K * K * K) { suffix = " EiB"; value /= K * K * K * K * K * K; }
        else if (value >= K * K * K * K * K) { suffix = " PiB"; value /= K * K * K * K * K; }
        else if (value >= K * K * K * K) { suffix = " TiB"; value /= K * K * K * K; }
        else if (value >= K * K * K) { suffix = " GiB"; value /= K * K * K; }
        else if (value >= K * K) { suffix = " MiB"; value /= K * K; }
        else if (value >= K) { suffix = " KiB"; value /= K; }
        else suffix = " bytes";
        // "%.3f" for KiB and up, "%f" for bytes; then everything from a ".000" on is cut.
        string text = QemuText.Fixed(value, suffix == " bytes" ? 6 : 3);
        int trim = text.IndexOf(".000", StringComparison.Ordinal);
        return (trim >= 0 ? text[..trim] : text) + suffix;
    }

    /// <summary>
    /// timestr: "00.12 sec" under a second, else (and always in the -C form) "h:mm:ss.ss" —
    /// "0:00:01.20" for a request of 1.2 s, as qemu-io prints it.
    /// </summary>
    public static string Time(TimeSpan t, bool machine)
    {
        long whole = t.Ticks / TimeSpan.TicksPerSecond;
        double fraction = t.Ticks % TimeSpan.TicksPerSecond * 100 / 1e9; // tv_nsec / 1e9
        if (!machine && whole == 0) return Seconds(fraction) + " sec";
        string minutes = (whole % 3600 / 60).ToString(CultureInfo.InvariantCulture).PadLeft(2, '0');
        return (whole / 3600).ToString(CultureInfo.InvariantCulture) + ":" + minutes + ":" + Seconds(whole % 60 + fraction);
    }

    /// <summary>"%05.2f": seconds with two places, at least two digits before the point.</summary>
    private static string Seconds(double seconds) => QemuText.Fixed(seconds, 2).PadLeft(5, '0');

    /// <summary>print_report: the two lines after read, write and discard.</summary>
    public static void Report(TextWriter o, string op, TimeSpan t, long offset, long count, long total, int ops, bool machine)
    {
        double seconds = Math.Max(t.TotalSeconds, 1e-9);
        // The parts are formatted before the line, not inside it: an interpolation inside another
        // returns a second buffer to the shared ArrayPool, whose first such return calibrates the
        // processor-number cache (a timing loop, 3% of `vdisk io -c 'read 0 4k'`).
        if (!machine)
        {
            o.Write(string.Create(CultureInfo.InvariantCulture, $"{op} {count}/{total} bytes at offset {offset}\n"));
            string size = Size(total), time = Time(t, false), rate = Size(total / seconds), opsRate = QemuText.Fixed(ops / seconds, 4);
            o.Write(string.Create(CultureInfo.InvariantCulture, $"{size}, {ops} ops; {time} ({rate}/sec and {opsRate} ops/sec)\n"));
        }
        else
        {
            string time = Time(t, true);
            string bytesRate = QemuText.Fixed(total / seconds, 3), opsRate = QemuText.Fixed(ops / seconds, 3);
            o.Write(string.Create(CultureInfo.InvariantCulture, $"{total},{ops},{time},{bytesRate},{opsRate}\n"));
        }
    }

    /// <summary>dump_buffer: offset, 16 hex bytes, and an alphanumeric column.</summary>
    public static void Dump(TextWriter o, ReadOnlySpan<byte> buffer, long offset)
    {
        var line = new System.Text.StringBuilder(80);
        for (int i = 0; i < buffer.Length; i += 16)
        {
            line.Clear();
            line.Append((offset + i).ToString("x8", CultureInfo.InvariantCulture)).Append(":  ");
            int n = Math.Min(16, buffer.Length - i);
            for (int j = 0; j < n; j++) line.Append(buffer[i + j].ToString("x2", CultureInfo.InvariantCulture)).Append(' ');
            line.Append(' ');
            for (int j = 0; j < n; j++)
            {
                char c = (char)buffer[i + j];
                line.Append(char.IsAsciiLetterOrDigit(c) ? c : '.');
            }
            line.Append('\n');
            o.Write(line.ToString());
        }
    }

    /// <summary>cvtnum: a size with suffixes; negative error codes like QEMU's (-EINVAL, -ERANGE).</summary>
    public static long ParseNumber(string text)
    {
        if (!Options.SizeParser.TryParse(text, out ulong value))
        {
            // Distinguish "too large" from "not a number" as qemu_strtosz does.
            bool numeric = text.Length > 0 && text.TrimEnd('b', 'B', 'k', 'K', 'm', 'M', 'g', 'G', 't', 'T', 'p', 'P', 'e', 'E').All(c => char.IsAsciiDigit(c) || c == '.');
            return numeric && text.Length > 0 && char.IsAsciiDigit(text[0]) ? -34 : -22;
        }
        if (value > long.MaxValue) return -34;
        return (long)value;
    }

    /// <summary>
    /// C's strtol with base 0, as qemu-io parses patterns and sleep times: leading white space,
    /// a sign, then hex after <c>0x</c>, octal after <c>0</c>, decimal otherwise; out-of-range
    /// values saturate at long's limits. True only when the whole text was consumed (qemu-io's
    /// <c>*endptr == '\0'</c> test); a text without digits gives 0 and false.
    /// </summary>
    public static bool TryParseStrtol(string text, out long value)
    {
        value = 0;
        int i = 0;
        while (i < text.Length && text[i] is ' ' or '\t' or '\n' or '\v' or '\f' or '\r') i++;
        bool negative = false;
        if (i < text.Length && text[i] is '+' or '-') negative = text[i++] == '-';
        int radix = 10;
        if (i + 1 < text.Length && text[i] == '0' && text[i + 1] is 'x' or 'X' && i + 2 < text.Length && char.IsAsciiHexDigit(text[i + 2]))
        {
            radix = 16;
            i += 2;
        }
        else if (i < text.Length && text[i] == '0')
        {
            radix = 8;
        }
        int start = i;
        bool overflow = false;
        ulong magnitude = 0;
        ulong limit = negative ? (ulong)long.MaxValue + 1 : long.MaxValue;
        for (; i < text.Length; i++)
        {
            int digit = text[i] switch
            {
                >= '0' and <= '9' => text[i] - '0',
                >= 'a' and <= 'z' => text[i] - 'a' + 10,
                >= 'A' and <= 'Z' => text[i] - 'A' + 10,
                _ => 99,
            };
            if (digit >= radix) break;
            if (magnitude > (limit - (ulong)digit) / (ulong)radix) overflow = true;
            else magnitude = magnitude * (ulong)radix + (ulong)digit;
        }
        if (i == start) return false;
        if (overflow) value = negative ? long.MinValue : long.MaxValue;
        else value = negative ? (long)(0 - magnitude) : (long)magnitude;
        return i == text.Length;
    }

    /// <summary>
    /// How long qemu-io's <c>sleep MS</c> waits: it arms a timer at host-clock nanoseconds plus
    /// MS * 1,000,000 in wrapping 64-bit arithmetic (QEMU builds with -fwrapv), and a deadline
    /// that ends up in the past fires at once. So a sleep too long for 64-bit nanoseconds (about
    /// 292 years) usually returns immediately, as it does in qemu-io.
    /// </summary>
    public static TimeSpan SleepDuration(long milliseconds, long nowNanoseconds)
    {
        long deadline = unchecked(nowNanoseconds + milliseconds * 1_000_000);
        return deadline <= nowNanoseconds ? TimeSpan.Zero : TimeSpan.FromTicks((deadline - nowNanoseconds) / 100);
    }

    /// <summary>print_cvtnum_err.</summary>
    public static string NumberError(long rc, string arg) => rc switch
    {
        -22 => $"Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- {arg}",
        -34 => $"Parsing error: argument too large -- {arg}",
        _ => $"Parsing error: {arg}",
    };
}
