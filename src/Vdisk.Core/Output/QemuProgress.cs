using System.Globalization;
using System.Numerics;

namespace Vdisk.Output;

/// <summary>
/// util/qemu-progress.c, the progress of qemu-img convert, commit, rebase and amend: with -p,
/// a line <c>"    (12.50/100%)\r"</c> each time the progress moved more than the minimum
/// step (and at 0 and 100), and a newline at the end; without -p nothing, unless a report was
/// requested (SIGUSR1), which the next line that -p would print answers once, on stderr, as
/// <c>"    (12.50/100%)\n"</c>.
/// Values are single-precision floats and printed as glibc's <c>%3.2f</c> prints them.
/// </summary>
public sealed class QemuProgress
{
    private readonly bool _enabled;
    private readonly float _minSkip;
    private readonly Action<string> _write;
    private readonly Action<string> _report;
    private readonly Lock _gate = new();
    private float _current;
    private float _lastPrint;
    private volatile bool _reportPending;

    /// <summary>qemu_progress_init.</summary>
    /// <param name="enabled">-p given (and not -q).</param>
    /// <param name="minSkip">Percent points between two lines (convert 1, rebase 2).</param>
    /// <param name="write">Receives the -p lines (stdout).</param>
    /// <param name="report">Receives a requested report (stderr).</param>
    public QemuProgress(bool enabled, float minSkip, Action<string> write, Action<string> report)
    {
        _enabled = enabled;
        _minSkip = minSkip;
        _write = write;
        _report = report;
    }

    /// <summary>The current value, in percent.</summary>
    public float Current
    {
        get
        {
            lock (_gate) return _current;
        }
    }

    /// <summary>
    /// qemu_progress_print: with <paramref name="max"/> 0, <paramref name="delta"/> is the
    /// new value; otherwise it adds <paramref name="delta"/> percent of <paramref name="max"/>.
    /// </summary>
    public void Print(float delta, int max)
    {
        lock (_gate)
        {
            float current = max == 0 ? delta : _current + delta / 100 * max;
            bool print = current > _lastPrint + _minSkip || current < _lastPrint - _minSkip || current == 0 || current == 100;
            _current = current;
            if (!print) return;
            _lastPrint = current;
            if (_enabled)
            {
                _write(Line(current) + "\r");
            }
            else if (_reportPending)
            {
                _reportPending = false;
                _report(Line(current) + "\n");
            }
        }
    }

    /// <summary>qemu_progress_end: the newline after the last -p line.</summary>
    public void End()
    {
        if (_enabled) _write("\n");
    }

    /// <summary>Asks for one report at the next update (what QEMU's SIGUSR1 handler does).</summary>
    public void RequestReport() => _reportPending = true;

    /// <summary>The text of one progress line without its ending: <c>"    (%3.2f/100%%)"</c>.</summary>
    public static string Line(float percent) => $"    ({FormatFixed2(percent)}/100%)";

    /// <summary>
    /// printf("%3.2f") of a float as glibc does it: the exact binary value rounded to two
    /// decimals, ties to even (.NET rounds ties away from zero).
    /// </summary>
    public static string FormatFixed2(float value)
    {
        double d = value; // exact
        bool negative = d < 0 || (d == 0 && double.IsNegative(d));
        d = Math.Abs(d);
        long bits = BitConverter.DoubleToInt64Bits(d);
        int exponent = (int)((bits >> 52) & 0x7FF);
        long mantissa = bits & 0xFFFFFFFFFFFFFL;
        if (exponent == 0) exponent++;
        else mantissa |= 1L << 52;
        exponent -= 1075; // value = mantissa * 2^exponent
        BigInteger numerator = new BigInteger(mantissa) * 100;
        BigInteger denominator = BigInteger.One;
        if (exponent >= 0) numerator <<= exponent;
        else denominator <<= -exponent;
        var quotient = BigInteger.DivRem(numerator, denominator, out var remainder);
        int compare = (remainder * 2).CompareTo(denominator);
        if (compare > 0 || (compare == 0 && !quotient.IsEven)) quotient += 1;
        string digits = quotient.ToString(CultureInfo.InvariantCulture).PadLeft(3, '0');
        string text = digits[..^2] + "." + digits[^2..];
        return (negative ? "-" : "") + text.PadLeft(3);
    }
}
