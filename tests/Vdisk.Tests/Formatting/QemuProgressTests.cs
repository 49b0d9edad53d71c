using System.Text;
using Vdisk.Output;
using Xunit;

namespace Vdisk.Tests.Formatting;

public class QemuProgressTests
{
    [Theory]
    [InlineData(0f, "0.00")]
    [InlineData(3.125f, "3.12")]   // an exact tie: glibc rounds to even
    [InlineData(9.375f, "9.38")]
    [InlineData(15.625f, "15.62")]
    [InlineData(0.005f, "0.00")]   // the float is just below the tie
    [InlineData(33.333332f, "33.33")]
    [InlineData(99.995f, "100.00")]  // the float is just above the tie
    [InlineData(100f, "100.00")]
    public void Prints_like_glibc_percent_3_2f(float value, string expected) => Assert.Equal(expected, QemuProgress.FormatFixed2(value));

    /// <summary>What qemu-img 7.2 convert -p prints into a pipe for 32 equal data requests.</summary>
    [Fact]
    public void Convert_of_32_requests_prints_qemu_imgs_lines()
    {
        var output = new StringBuilder();
        var progress = new QemuProgress(true, 1.0f, s => output.Append(s), _ => throw new InvalidOperationException("no report expected"));
        progress.Print(0, 100);
        for (int i = 1; i <= 32; i++) progress.Print((float)(100.0 * i / 32), 0);
        progress.Print(100, 0);
        progress.End();
        var expected = new StringBuilder();
        foreach (var v in new[] { "0.00", "3.12", "6.25", "9.38", "12.50", "15.62", "18.75", "21.88", "25.00", "28.12", "31.25", "34.38",
            "37.50", "40.62", "43.75", "46.88", "50.00", "53.12", "56.25", "59.38", "62.50", "65.62", "68.75", "71.88", "75.00", "78.12",
            "81.25", "84.38", "87.50", "90.62", "93.75", "96.88", "100.00", "100.00" })
            expected.Append("    (").Append(v).Append("/100%)\r");
        expected.Append('\n');
        Assert.Equal(expected.ToString(), output.ToString());
    }

    [Fact]
    public void Steps_below_the_minimum_are_not_printed()
    {
        var output = new StringBuilder();
        var progress = new QemuProgress(true, 2.0f, s => output.Append(s), _ => { });
        foreach (var v in new[] { 0f, 1f, 2f, 2.5f, 4.6f, 100f }) progress.Print(v, 0);
        Assert.Equal("    (0.00/100%)\r    (2.50/100%)\r    (4.60/100%)\r    (100.00/100%)\r", output.ToString());
    }

    [Fact]
    public void Without_p_a_requested_report_goes_out_once_at_the_next_line()
    {
        var output = new StringBuilder();
        var reports = new StringBuilder();
        var progress = new QemuProgress(false, 1.0f, s => output.Append(s), s => reports.Append(s));
        progress.Print(10, 0);
        progress.RequestReport();
        progress.Print(10.5f, 0);
        progress.Print(20, 0);
        progress.Print(30, 0);
        progress.End();
        Assert.Equal("", output.ToString());
        Assert.Equal("    (20.00/100%)\n", reports.ToString());
    }
}
