using Vdisk.Interop.Support;
using Xunit;
using static Vdisk.Interop.Support.FormatCompat;
using static Vdisk.Interop.Support.Qemu;

namespace Vdisk.Interop.Luks;

/// <summary>
/// Encrypted qcow2 (encrypt.format=aes, the legacy encryption=on, and encrypt.format=luks): images
/// made by qemu-img read back identical through vdisk, images vdisk makes are read and checked by
/// QEMU, encrypted backing chains, and QEMU's errors for missing secrets.
/// </summary>
public class Qcow2EncryptionTests
{
    private const string Secret = "secret,id=sec0,data=astrochicken";

    private static string Opts(string img, string extra = "") => $"driver=qcow2,file.filename={img},encrypt.key-secret=sec0{extra}";

    public static TheoryData<string> Encryptions() =>
    [
        "encryption=on",
        "encrypt.format=aes",
        "encrypt.format=luks,encrypt.iter-time=10",
        "encrypt.format=luks,encrypt.iter-time=10,encrypt.cipher-alg=aes-128,encrypt.cipher-mode=cbc,encrypt.ivgen-alg=essiv,cluster_size=4096",
        "encrypt.format=luks,encrypt.iter-time=10,encrypt.cipher-alg=twofish-256",
        "encrypt.format=luks,encrypt.iter-time=10,encrypt.cipher-alg=serpent-128,encrypt.cipher-mode=cbc,encrypt.ivgen-alg=essiv,cluster_size=4096",
        "encrypt.format=luks,encrypt.iter-time=10,encrypt.cipher-alg=cast5-128,encrypt.cipher-mode=cbc",
    ];

    private static readonly string[] Writes = ["write -P 0x11 0 1k", "write -P 0xb 512 512", "write -P 0x22 100k 200k", "write -P 0x33 1M 64k"];

    private static string Create(Func<string[], RunResult> tool, TempDir dir, string name, string options, string size = "2M")
    {
        string img = dir.File(name);
        Ok(tool(["create", "-q", "-f", "qcow2", "--object", Secret, "-o", options + ",encrypt.key-secret=sec0", img, size]));
        return img;
    }

    [Theory]
    [MemberData(nameof(Encryptions))]
    public void QemuMadeImage_ReadsBackIdentical(string options)
    {
        using var dir = new TempDir();
        string img = Create(ImgCreateEncrypted, dir, "q.qcow2", options);
        Ok(Io(["--object", Secret, "--image-opts", .. Commands(Writes), Opts(img)]));
        foreach (var output in new[] { "human", "json" })
        {
            Same(false, "info", $"--output={output}", img);
            Same(false, "map", $"--output={output}", "--object", Secret, "--image-opts", Opts(img));
        }
        string theirs = dir.File("theirs.raw"), mine = dir.File("mine.raw");
        Ok(Img("convert", "--object", Secret, "--image-opts", Opts(img), "-O", "raw", theirs));
        Ok(Qemu.Vdisk("convert", "--object", Secret, "--image-opts", Opts(img), "-O", "raw", mine));
        var cmp = Programs.Run("cmp", theirs, mine);
        Assert.True(cmp.ExitCode == 0, cmp.ToString());
        Same(false, "check", "--object", Secret, "--image-opts", Opts(img));
    }

    [Theory]
    [MemberData(nameof(Encryptions))]
    public void VdiskMadeImage_IsReadAndCheckedByQemu(string options)
    {
        using var dir = new TempDir();
        string img = Create(args => Qemu.Vdisk(args), dir, "v.qcow2", options);
        Ok(Qemu.Vdisk(["io", "--object", Secret, "--image-opts", .. Commands(Writes), "-c", "write -P 0x44 70000 3", Opts(img)]));
        string raw = dir.File("expected.raw");
        Ok(Img("create", "-q", "-f", "raw", raw, "2M"));
        Ok(Io(["-f", "raw", .. Commands(Writes), "-c", "write -P 0x44 70000 3", raw]));
        var r = Img("compare", "--object", Secret, "--image-opts", $"driver=raw,file.filename={raw}", Opts(img));
        Assert.True(r.ExitCode == 0 && r.Stdout.Contains("Images are identical."), r.ToString());
        var check = Img("check", "--object", Secret, "--image-opts", Opts(img));
        Assert.True(check.ExitCode == 0, check.ToString());
        Same(false, "info", img);
    }

    /// <summary>
    /// iotest 188: preallocated clusters of an encrypted image decrypt to noise, so a convert into
    /// one (preallocation=metadata) must write the source's zeroes instead of trusting a zeroed
    /// target (qcow2_has_zero_init is false for a preallocated encrypted image).
    /// </summary>
    [Theory]
    [InlineData("encrypt.format=luks,encrypt.iter-time=10")]
    [InlineData("encrypt.format=aes")]
    public void Convert_into_a_preallocated_encrypted_image_writes_the_zeroes(string options)
    {
        using var dir = new TempDir();
        string source = dir.File("zero.qcow2"), target = dir.File("t.qcow2");
        Ok(Img("create", "-q", "-f", "qcow2", source, "4M"));
        Ok(Qemu.Vdisk("convert", "-O", "qcow2", "--object", Secret, "-o", options + ",encrypt.key-secret=sec0,preallocation=metadata", source, target));
        var r = Img("compare", "--object", Secret, "--image-opts", $"driver=qcow2,file.filename={source}", Opts(target));
        Assert.True(r.ExitCode == 0 && r.Stdout.Contains("Images are identical."), r.ToString());
    }

    [Theory]
    [InlineData("encryption=on")]
    [InlineData("encrypt.format=luks,encrypt.iter-time=10")]
    public void EncryptedBackingChain_ReadsAndWritesAsQemu(string options)
    {
        using var dir = new TempDir();
        string baseImg = Create(ImgCreateEncrypted, dir, "base.qcow2", options);
        Ok(Io("--object", Secret, "--image-opts", "-c", "write -P 0xa 0 1M", Opts(baseImg)));
        string top = dir.File("top.qcow2");
        Ok(Qemu.Vdisk("create", "-q", "-f", "qcow2", "--object", Secret, "-o", options + ",encrypt.key-secret=sec0", "-b", baseImg, "-F", "qcow2", top, "2M"));
        string chain = $"driver=qcow2,file.filename={top},encrypt.key-secret=sec0,backing.driver=qcow2,backing.file.filename={baseImg},backing.encrypt.key-secret=sec0";
        Ok(Qemu.Vdisk("io", "--object", Secret, "--image-opts", "-c", "write -P 0xb 512k 4k", chain));
        foreach (var read in new[] { "read -q -P 0xa 0 512k", "read -q -P 0xb 512k 4k", "read -q -P 0xa 516k 508k", "read -q -P 0 1M 1M" })
            Same(true, "--object", Secret, "--image-opts", "-c", read, chain);
    }

    [Fact]
    public void MissingAndWrongSecrets_GetQemusLine()
    {
        using var dir = new TempDir();
        string aes = Create(ImgCreateEncrypted, dir, "aes.qcow2", "encryption=on");
        string luks = Create(ImgCreateEncrypted, dir, "luks.qcow2", "encrypt.format=luks,encrypt.iter-time=10");
        foreach (var img in new[] { aes, luks })
        {
            Same(true, "-f", "qcow2", "-c", "read -q 0 512", img);
            Same(true, "--image-opts", "-c", "read -q 0 512", Opts(img).Replace("sec0", "sec9"));
            Same(true, "--image-opts", "-c", "read -q 0 512", Opts(img, ",encrypt.format=" + (img == aes ? "luks" : "aes")));
        }
        Same(true, "--object", "secret,id=sec0,data=wrong", "--image-opts", "-c", "read -q 0 512", Opts(luks));
        Same(false, "create", "-f", "qcow2", "-o", "encryption=on", dir.File("nosecret.qcow2"), "1M");
        Assert.False(File.Exists(dir.File("nosecret.qcow2")));
    }
}
