using Vdisk.Interop.Support;
using Xunit;
using static Vdisk.Interop.Support.FormatCompat;
using static Vdisk.Interop.Support.Qemu;

namespace Vdisk.Interop.Luks;

/// <summary>
/// qemu-img measure of encrypted qcow2 targets (encrypt.format=luks adds its header's clusters,
/// aes measures as unencrypted), and the LUKS option refusals of measure and create in
/// qemu-img's words.
/// </summary>
public class EncryptedMeasureTests
{
    private static readonly string[] Secrets = ["--object", "secret,id=s0,data=hunter0"];

    /// <summary>
    /// qemu-img measure with LUKS runs QEMU's PBKDF2 timing (it creates a header to learn its
    /// length), which fails at random on this VM's clock: retried as image creation is.
    /// </summary>
    private static void SameMeasure(params string[] args)
    {
        var theirs = ImgCreateEncrypted(["measure", .. Secrets, .. args]);
        AssertSame(theirs, Qemu.Vdisk(["measure", .. Secrets, .. args]));
    }

    public static TheoryData<string> Targets() =>
    [
        "encrypt.format=luks,encrypt.key-secret=s0",
        "encrypt.format=luks,encrypt.key-secret=s0,encrypt.cipher-alg=aes-128,encrypt.cipher-mode=cbc,encrypt.ivgen-alg=essiv",
        "encrypt.format=luks,encrypt.key-secret=s0,encrypt.cipher-alg=aes-192,cluster_size=4k",
        "encrypt.format=luks,encrypt.key-secret=s0,cluster_size=2M,compat=0.10",
        "encrypt.format=luks,encrypt.key-secret=s0,encrypt.hash-alg=sha1,encrypt.iter-time=10,preallocation=full",
        "encrypt.format=aes,encrypt.key-secret=s0",
        "encryption=on,encrypt.key-secret=s0",
        "encrypt.format=foo",
    ];

    [Theory]
    [MemberData(nameof(Targets))]
    public void Measure_OfEncryptedQcow2_IsQemus(string options)
    {
        using var dir = new TempDir();
        string raw = Make(dir, "in.raw", "raw", "", "5M", "write -P 1 0 1M", "write -P 2 3M 64k");
        string qcow2 = Make(dir, "in.qcow2", "qcow2", "", "5M", "write -P 1 1M 1M");
        // Each QEMU measure here times PBKDF2 (seconds): the human text once, the figures from every kind of source.
        SameMeasure("-O", "qcow2", "-o", options, "--size", "1G", "--output=human");
        SameMeasure("-O", "qcow2", "-o", options, "--size", "1G", "--output=json");
        SameMeasure("-O", "qcow2", "-o", options, "-f", "raw", raw, "--output=json");
        SameMeasure("-O", "qcow2", "-o", options, "-f", "qcow2", qcow2, "--output=json");
    }

    [Theory]
    [InlineData("encrypt.format=luks")]
    [InlineData("encrypt.format=luks,encrypt.key-secret=s9")]
    [InlineData("encrypt.format=luks,encrypt.key-secret=s0,encrypt.cipher-alg=foo")]
    [InlineData("encrypt.format=luks,encrypt.key-secret=s0,encrypt.cipher-mode=foo")]
    [InlineData("encrypt.format=luks,encrypt.key-secret=s0,encrypt.ivgen-alg=foo")]
    [InlineData("encrypt.format=luks,encrypt.key-secret=s0,encrypt.hash-alg=foo")]
    [InlineData("encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=x")]
    [InlineData("encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=18446744073709551615")]
    [InlineData("encrypt.format=luks,encrypt.key-secret=s0,cluster_size=3k")]
    public void MeasureAndCreate_RefuseLuksOptions_AsQemu(string options)
    {
        using var dir = new TempDir();
        SameMeasure("-O", "qcow2", "-o", options, "--size", "1G");
        var theirs = Img(["create", "-q", "-f", "qcow2", .. Secrets, "-o", options, dir.File("q.qcow2"), "1M"]);
        Assert.True(theirs.ExitCode != 0, theirs.ToString());
        var mine = Qemu.Vdisk(["create", "-q", "-f", "qcow2", .. Secrets, "-o", options, dir.File("q.qcow2"), "1M"]);
        AssertSame(theirs, mine);
    }
}
