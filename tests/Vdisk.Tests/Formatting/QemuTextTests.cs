using System.Runtime.InteropServices;
using System.Text;
using CsCheck;
using Vdisk.Output;
using Xunit;

namespace Vdisk.Tests.Formatting;

/// <summary>QemuText's number formatting against glibc's own printf conversions (strfromd), which QEMU's tools print with.</summary>
public partial class QemuTextTests
{
    // strfromd: printf's floating-point conversions without varargs, so a P/Invoke can call it.
    // Its format is "%[.precision]conversion" only: glibc aborts on anything else.
    [LibraryImport("libc", EntryPoint = "strfromd", StringMarshalling = StringMarshalling.Utf8)]
    private static unsafe partial int StrFromD(byte* buffer, nuint size, string format, double value);

    private static unsafe string Glibc(string format, double value)
    {
        byte* buffer = stackalloc byte[128];
        int n = StrFromD(buffer, 128, format, value);
        Assert.InRange(n, 1, 127);
        return Encoding.ASCII.GetString(buffer, n);
    }

    [Theory]
    [InlineData(1.0625, 3)] // an exact tie: to even
    [InlineData(1.0635, 3)]
    [InlineData(0.5, 0)]
    [InlineData(1.5, 0)]
    [InlineData(2.5, 0)]
    [InlineData(0.0, 6)]
    [InlineData(-0.0, 2)]
    [InlineData(-3.14159, 4)]
    [InlineData(4.9406564584124654e-324, 6)] // the smallest subnormal
    [InlineData(999999999.9999999, 6)]
    [InlineData(1234.5678, 0)]
    public void Fixed_IsPrintfs(double value, int decimals) =>
        Assert.Equal(Glibc($"%.{decimals}f", value), QemuText.Fixed(value, decimals));

    [Fact]
    public void Fixed_IsPrintfs_ForAnyValueAndPrecision()
    {
        // Values as qemu-io reports them (sizes in a unit, rates, seconds), ties included: halves
        // of a thousandth, and dyadic fractions.
        var values = Gen.OneOf(
            Gen.Double[0, 1e6],
            Gen.Long[0, 1L << 40].Select(n => n / 1024.0),
            Gen.Long[0, 1_000_000].Select(n => (n + 0.5) / 1000.0),
            Gen.Long[-1_000_000, 1_000_000].Select(Gen.Int[1, 20], (n, shift) => n / (double)(1L << shift)),
            Gen.Double[-1e9, 1e9]);
        Gen.Select(values, Gen.Int[0, 9]).Sample((value, decimals) =>
            Assert.Equal(Glibc($"%.{decimals}f", value), QemuText.Fixed(value, decimals)), iter: 20_000);
    }

    [Fact]
    public void SizeToStr_IsSizeToStrOfCutils_ForAnySize()
    {
        // util/cutils.c size_to_str: frexp picks the unit, then "%0.3g %sB".
        string[] suffixes = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
        static int FrexpExponent(double x) => x == 0 ? 0 : Math.ILogB(x) + 1;
        var sizes = Gen.OneOf(
            Gen.Long[0, long.MaxValue],
            Gen.Int[0, 62].Select(Gen.Long[-2048, 2048], (bits, delta) => Math.Max(0, (1L << bits) + delta)),
            Gen.Int[1, 5].Select(Gen.Long[999_000, 1_000_000], (unit, n) => n << (10 * (unit - 1))));
        sizes.Sample(size =>
        {
            int i = (FrexpExponent(size / (1000.0 / 1024.0)) - 1) / 10;
            // strfromd takes no flags (a "%0.3g" aborts the process); the 0 flag without a width does nothing anyway.
            string expected = Glibc("%.3g", size / Math.Pow(2, i * 10)) + " " + suffixes[i] + "B";
            Assert.Equal(expected, QemuText.SizeToStr(size));
        }, iter: 20_000);
    }
}
