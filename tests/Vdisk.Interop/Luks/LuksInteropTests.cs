using Vdisk.Interop.Support;
using Xunit;
using static Vdisk.Interop.Support.FormatCompat;
using static Vdisk.Interop.Support.Qemu;

namespace Vdisk.Interop.Luks;

/// <summary>
/// LUKS images: made by qemu-img and read by vdisk, made by vdisk and read by QEMU, with the
/// same info, and the same one-line errors for wrong, missing and unknown secrets and for
/// damaged headers.
/// </summary>
public class LuksInteropTests
{
    public const string Secret = "secret,id=s0,data=pw";

    /// <summary>The image-opts string of a luks image unlocked by secret s0.</summary>
    public static string Opts(string img, string extra = "") => $"driver=luks,key-secret=s0,file.filename={img}{extra}";

    /// <summary>qemu-img create -f luks (fast PBKDF: iter-time=10) and qemu-io writes.</summary>
    public static string MakeWithQemu(TempDir dir, string name, string options, string size, params string[] writes)
    {
        string img = dir.File(name);
        Ok(ImgCreateEncrypted("create", "-q", "-f", "luks", "--object", Secret, "-o", "key-secret=s0,iter-time=10" + (options.Length > 0 ? "," + options : ""), img, size));
        if (writes.Length > 0) Ok(Io(["--object", Secret, "--image-opts", .. Commands(writes), Opts(img)]));
        return img;
    }

    private static readonly string[] Writes = ["write -P 0x11 0 1k", "write -P 0x22 1000 3000", "write -P 0x33 1M 64k", "write -P 0x44 3M 1M"];

    public static TheoryData<string> CipherOptions() =>
    [
        "",
        "cipher-alg=aes-128,cipher-mode=cbc,ivgen-alg=essiv,hash-alg=sha1",
        "cipher-alg=aes-192,cipher-mode=xts,ivgen-alg=plain,hash-alg=sha512",
        "cipher-alg=aes-256,cipher-mode=cbc,ivgen-alg=essiv,ivgen-hash-alg=sha256",
        "cipher-alg=aes-128,cipher-mode=ecb",
        "cipher-alg=aes-256,cipher-mode=ctr,ivgen-alg=plain",
        // QEMU's other LUKS ciphers (nettle's in QEMU, BouncyCastle's in vdisk).
        "cipher-alg=twofish-256,cipher-mode=xts,ivgen-alg=plain64",
        "cipher-alg=twofish-128,cipher-mode=cbc,ivgen-alg=essiv",
        "cipher-alg=twofish-192,cipher-mode=xts,ivgen-alg=plain,hash-alg=sha1",
        "cipher-alg=serpent-128,cipher-mode=xts,ivgen-alg=essiv,ivgen-hash-alg=md5",
        "cipher-alg=serpent-256,cipher-mode=cbc,ivgen-alg=plain64",
        "cipher-alg=serpent-192,cipher-mode=xts",
        "cipher-alg=serpent-128,cipher-mode=ctr",
        "cipher-alg=cast5-128,cipher-mode=cbc,ivgen-alg=plain64",
        "cipher-alg=cast5-128,cipher-mode=ecb",
        "cipher-alg=cast5-128,cipher-mode=ctr,ivgen-alg=plain",
    ];

    /// <summary>Cipher choices QEMU 7.2 refuses at create and measure, each with its line.</summary>
    public static TheoryData<string> RefusedCipherOptions() =>
    [
        "cipher-alg=cast5-128,cipher-mode=xts",
        "cipher-alg=cast5-128,cipher-mode=cbc,ivgen-alg=essiv",
        "cipher-alg=cast5-128,cipher-mode=xts,ivgen-alg=essiv",
        "cipher-alg=des",
        "cipher-alg=3des,cipher-mode=foo",
        "cipher-alg=sm4",
        "cipher-alg=serpent-128,ivgen-alg=essiv,ivgen-hash-alg=sha1",
        "cipher-alg=twofish-128,cipher-mode=cbc,ivgen-alg=essiv,ivgen-hash-alg=sha512",
    ];

    [Theory]
    [MemberData(nameof(RefusedCipherOptions))]
    public void RefusedCiphers_GetQemusLine_ForLuksAndQcow2(string options)
    {
        using var dir = new TempDir();
        string qcow2Options = "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10," +
            string.Join(',', options.Split(',').Select(o => "encrypt." + o));
        var cases = new[]
        {
            new[] { "create", "-q", "-f", "luks", "--object", Secret, "-o", "key-secret=s0,iter-time=10," + options, dir.File("t.luks"), "1M" },
            ["create", "-q", "-f", "qcow2", "--object", Secret, "-o", qcow2Options, dir.File("t.qcow2"), "1M"],
            ["measure", "--object", Secret, "-O", "qcow2", "-o", qcow2Options, "--size", "1G"],
            ["measure", "--object", Secret, "-O", "luks", "-o", "key-secret=s0," + options, "--size", "1G"],
        };
        foreach (var args in cases)
        {
            var theirs = ImgCreateEncrypted(args);
            Assert.True(theirs.ExitCode != 0, theirs.ToString());
            AssertSame(theirs, Qemu.Vdisk(args));
            Assert.False(File.Exists(dir.File("t.luks")));
        }
    }

    [Theory]
    [MemberData(nameof(CipherOptions))]
    public void QemuMadeImage_ReadsBackIdentical(string options)
    {
        using var dir = new TempDir();
        string img = MakeWithQemu(dir, "disk.luks", options, "4M", Writes);
        foreach (var output in new[] { "human", "json" })
        {
            Same(false, "info", $"--output={output}", img);
            Same(false, "info", $"--output={output}", "--object", Secret, "--image-opts", Opts(img));
        }
        string theirs = dir.File("theirs.raw"), mine = dir.File("mine.raw");
        Ok(Img("convert", "--object", Secret, "--image-opts", Opts(img), "-O", "raw", theirs));
        Ok(Qemu.Vdisk("convert", "--object", Secret, "--image-opts", Opts(img), "-O", "raw", mine));
        var cmp = Programs.Run("cmp", theirs, mine);
        Assert.True(cmp.ExitCode == 0, cmp.ToString());
        foreach (var w in Writes) Same(true, "--object", Secret, "--image-opts", "-r", "-c", w.Replace("write", "read -q"), Opts(img));
        Same(false, "map", "--output=json", "--object", Secret, "--image-opts", Opts(img));
    }

    [Theory]
    [MemberData(nameof(CipherOptions))]
    public void VdiskMadeImage_IsReadByQemu(string options)
    {
        using var dir = new TempDir();
        string img = dir.File("v.luks");
        Ok(Qemu.Vdisk("create", "-q", "-f", "luks", "--object", Secret, "-o", "key-secret=s0,iter-time=10" + (options.Length > 0 ? "," + options : ""), img, "4M"));
        // What a new LUKS payload reads is the decryption of the file's zeroes: the test fills it first.
        Ok(Qemu.Vdisk(["io", "--object", Secret, "--image-opts", "-c", "write -P 0x66 0 4M", .. Commands(Writes), "-c", "write -P 0x55 4000 100", Opts(img)]));
        // The same writes through QEMU on a raw image: the contents must compare equal.
        string raw = dir.File("expected.raw");
        Ok(Img("create", "-q", "-f", "raw", raw, "4M"));
        Ok(Io(["-f", "raw", "-c", "write -P 0x66 0 4M", .. Commands(Writes), "-c", "write -P 0x55 4000 100", raw]));
        var r = Img("compare", "--object", Secret, "--image-opts", $"driver=raw,file.filename={raw}", Opts(img));
        Assert.True(r.ExitCode == 0 && r.Stdout.Contains("Images are identical."), r.ToString());
        Same(false, "info", "--output=json", img);
        Assert.Equal(new FileInfo(MakeWithQemu(dir, "q.luks", options, "4M")).Length, new FileInfo(img).Length);
    }

    [Fact]
    public void ConvertToAndFromLuks_RoundTrips()
    {
        using var dir = new TempDir();
        string raw = dir.File("src.raw");
        Ok(Img("create", "-q", "-f", "raw", raw, "3M"));
        Ok(Io("-f", "raw", "-c", "write -P 0x77 512k 1M", raw));
        string luks = dir.File("c.luks");
        Ok(Qemu.Vdisk("convert", "--object", Secret, "-O", "luks", "-o", "key-secret=s0,iter-time=10", "-f", "raw", raw, luks));
        var r = Img("compare", "--object", Secret, "--image-opts", $"driver=raw,file.filename={raw}", Opts(luks));
        Assert.True(r.ExitCode == 0, r.ToString());
        string back = dir.File("back.qcow2");
        Ok(Qemu.Vdisk("convert", "--object", Secret, "--image-opts", Opts(luks), "-O", "qcow2", back));
        AssertIdentical(raw, back, "raw", "qcow2");
    }

    [Fact]
    public void WrongMissingAndUnknownSecrets_GetQemusLine()
    {
        using var dir = new TempDir();
        string img = MakeWithQemu(dir, "disk.luks", "", "1M");
        Same(true, "--object", "secret,id=s0,data=wrong", "--image-opts", "-c", "read 0 512", Opts(img));
        Same(true, "--image-opts", "-c", "read 0 512", Opts(img));
        Same(true, "-f", "luks", "-c", "read 0 512", img);
        Same(true, "--image-opts", "-c", "read 0 512", Opts(img).Replace("key-secret=s0", "key-secret=s9"));
        Same(false, "convert", "--object", "secret,id=s0,data=wrong", "--image-opts", Opts(img), "-O", "raw", dir.File("out.raw"));
        Same(false, "create", "-f", "luks", dir.File("nosecret.luks"), "1M");
        Assert.False(File.Exists(dir.File("nosecret.luks")));
        Same(false, "create", "-f", "luks", "--object", Secret, "-o", "key-secret=s1", dir.File("nosecret.luks"), "1M");
        Same(false, "create", "-f", "luks", "--object", Secret, "-o", "key-secret=s0,cipher-alg=foo", dir.File("badcipher.luks"), "1M");
    }

    public static TheoryData<string, int, byte[]> Damages() => new()
    {
        { "magic", 0, "X"u8.ToArray() },
        { "version 2 (LUKS2)", 6, [0, 2] },
        { "cipher name", 8, "des\0"u8.ToArray() },
        { "cipher mode", 40, "foo-plain64\0"u8.ToArray() },
        { "mode without ivgen", 40, "xts\0"u8.ToArray() },
        { "essiv without hash", 40, "xts-essiv\0"u8.ToArray() },
        { "ivgen", 40, "xts-foo\0"u8.ToArray() },
        { "hash", 72, "sha999\0"u8.ToArray() },
        { "payload offset", 104, [0, 0, 0, 1] },
        { "key bytes", 108, [0, 0, 0, 0x11] },
        { "master key iterations", 164, [0, 0, 0, 0] },
        { "slot state", 208, [0, 0, 0, 1] },
        { "slot offset", 208 + 40, [0, 0, 0, 1] },
        { "slot stripes", 208 + 44, [0, 0, 0, 0] },
        { "slot iterations", 208 + 4, [0, 0, 0, 0] },
        { "slot overlap", 208 + 48 + 40, [0, 0, 0, 8] },
        { "slot 0 disabled", 208, [0, 0, 0xDE, 0xAD] },
    };

    [Theory]
    [MemberData(nameof(Damages))]
    public void DamagedHeader_GetsQemusLine(string what, int offset, byte[] bytes)
    {
        _ = what;
        using var dir = new TempDir();
        string img = MakeWithQemu(dir, "disk.luks", "", "1M");
        Patch(img, offset, bytes);
        Same(false, "info", img);
        Same(true, "--object", Secret, "--image-opts", "-c", "read 0 512", Opts(img));
    }

    [Fact]
    public void ProbedWithoutFormat_AsQemuProbes()
    {
        using var dir = new TempDir();
        string img = MakeWithQemu(dir, "disk.luks", "", "1M", "write -P 0x11 0 4k");
        Same(false, "info", img);
        Same(true, "-c", "read -q 0 512", img);
        // key-secret in a json: filename, as the iotests write it.
        Same(true, "--object", Secret, "-c", "read -q -P 0x11 0 4k", $"json:{{\"driver\":\"luks\",\"key-secret\":\"s0\",\"file\":{{\"filename\":\"{img}\"}}}}");
    }

    [Fact]
    public void UnalignedWrites_ReadBackThroughQemu()
    {
        using var dir = new TempDir();
        string img = MakeWithQemu(dir, "disk.luks", "", "1M", "write -P 0x11 0 64k");
        Ok(Qemu.Vdisk("io", "--object", Secret, "--image-opts", "-c", "write -P 0x22 100 1", "-c", "write -P 0x33 511 2", "-c", "write -P 0x44 4000 70000", Opts(img)));
        foreach (var read in new[] { "read -P 0x11 0 100", "read -P 0x22 100 1", "read -P 0x11 101 410", "read -P 0x33 511 2", "read -P 0x11 513 3487", "read -P 0x44 4000 70000" })
            Ok(Io("--object", Secret, "--image-opts", "-c", read, Opts(img)));
    }
}
