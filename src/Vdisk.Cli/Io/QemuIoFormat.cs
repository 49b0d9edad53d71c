using System.Globalization;

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
        string six = value.ToString("F6", CultureInfo.InvariantCulture);
        int trim = six.IndexOf(".000", StringComparison.Ordinal);
        if (trim >= 0) return six[..trim] + suffix;
        return value.ToString("F3", CultureInfo.InvariantCulture) + suffix;
    }

    /// <summary>timestr: "00.00 sec", or h:mm:ss.ss in the -C form.</summary>
    public static string Time(TimeSpan t, bool machine)
    {
        double seconds = t.TotalSeconds;
        if (machine)
        {
            int h = (int)(seconds / 3600);
            int m = (int)(seconds % 3600 / 60);
            double s = seconds % 60;
            return string.Create(CultureInfo.InvariantCulture, $"{h}:{m:00}:{s:00.00}");
        }
        if (seconds >= 3600)
        {
            int h = (int)(seconds / 3600);
            int m = (int)(seconds % 3600 / 60);
            return string.Create(CultureInfo.InvariantCulture, $"{h}:{m:00}:{seconds % 60:00.00}");
        }
        if (seconds >= 60)
            return string.Create(CultureInfo.InvariantCulture, $"{(int)(seconds / 60)}:{seconds % 60:00.00}");
        return string.Create(CultureInfo.InvariantCulture, $"{seconds:00.00} sec");
    }

    /// <summary>print_report: the two lines after read, write and discard.</summary>
    public static void Report(TextWriter o, string op, TimeSpan t, long offset, long count, long total, int ops, bool machine)
    {
        double seconds = Math.Max(t.TotalSeconds, 1e-9);
        if (!machine)
        {
            o.Write(string.Create(CultureInfo.InvariantCulture, $"{op} {count}/{total} bytes at offset {offset}\n"));
            o.Write(string.Create(CultureInfo.InvariantCulture,
                $"{Size(total)}, {ops} ops; {Time(t, false)} ({Size(total / seconds)}/sec and {ops / seconds:F4} ops/sec)\n"));
        }
        else
        {
            o.Write(string.Create(CultureInfo.InvariantCulture,
                $"{total},{ops},{Time(t, true)},{total / seconds:F3},{ops / seconds:F3}\n"));
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

    /// <summary>print_cvtnum_err.</summary>
    public static string NumberError(long rc, string arg) => rc switch
    {
        -22 => $"Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- {arg}",
        -34 => $"Parsing error: argument too large -- {arg}",
        _ => $"Parsing error: {arg}",
    };
}
