using Vdisk.Interop.Support;
using Xunit;
using static Vdisk.Interop.Support.FormatCompat;
using static Vdisk.Interop.Support.Qemu;

namespace Vdisk.Interop.Luks;

/// <summary>
/// qemu-img amend of LUKS key slots (luks, and qcow2 with encrypt.format=luks): a slot vdisk
/// adds opens the image in QEMU, a slot vdisk erases no longer does, and the reverse; every
/// refusal in qemu-img's words.
/// </summary>
public class LuksAmendTests
{
    private static readonly string[] Secrets = ["--object", "secret,id=s0,data=hunter0", "--object", "secret,id=s1,data=hunter1", "--object", "secret,id=s2,data=hunter2"];

    /// <summary>The format's amend option prefix: luks has the options at top level, qcow2 under encrypt.</summary>
    private static string Prefix(string format) => format == "qcow2" ? "encrypt." : "";

    private static string Opts(string format, string img, string secret) =>
        $"driver={format},file.filename={img},{Prefix(format)}key-secret={secret}";

    /// <summary>An image of <paramref name="format"/> with data, made by <paramref name="tool"/>, unlocked by s0.</summary>
    private static string Make(Func<string[], RunResult> tool, TempDir dir, string format, string name)
    {
        string img = dir.File(name);
        string p = Prefix(format);
        string options = (format == "qcow2" ? "encrypt.format=luks," : "") + $"{p}key-secret=s0,{p}iter-time=10";
        Ok(tool(["create", "-q", "-f", format, .. Secrets, "-o", options, img, "4M"]));
        Ok(Io([.. Secrets, "--image-opts", "-c", "write -P 0x5a 0 64k", "-c", "write -P 0xa5 3M 4k", Opts(format, img, "s0")]));
        return img;
    }

    private static RunResult Amend(Func<string[], RunResult> tool, string format, string img, string secret, string options, bool force = false)
    {
        string p = Prefix(format);
        string prefixed = string.Join(',', options.Split(',').Select(o => p + o));
        return tool(["amend", .. Secrets, "--image-opts", Opts(format, img, secret), "-o", prefixed, .. force ? new[] { "--force" } : []]);
    }

    /// <summary>qemu-io reads the data back with <paramref name="secret"/>.</summary>
    private static void QemuOpens(string format, string img, string secret) =>
        Ok(Io([.. Secrets, "--image-opts", "-r", "-c", "read -P 0x5a 0 64k", "-c", "read -P 0xa5 3M 4k", Opts(format, img, secret)]));

    private static void QemuRefuses(string format, string img, string secret)
    {
        var r = Io([.. Secrets, "--image-opts", "-r", "-c", "read 0 512", Opts(format, img, secret)]);
        Assert.True(r.ExitCode != 0 && r.Stderr.Contains("Invalid password, cannot unlock any keyslot", StringComparison.Ordinal), r.ToString());
    }

    private static Func<string[], RunResult> VdiskTool => args => Qemu.Vdisk(args);

    public static TheoryData<string> Formats() => ["luks", "qcow2"];

    [Theory]
    [MemberData(nameof(Formats))]
    public void SlotsVdiskAddsAndErases_AreWhatQemuOpens(string format)
    {
        using var dir = new TempDir();
        string img = Make(ImgCreateEncrypted, dir, format, "q.img");
        Ok(Amend(VdiskTool, format, img, "s0", "state=active,new-secret=s1,iter-time=10"));
        QemuOpens(format, img, "s0");
        QemuOpens(format, img, "s1");
        Ok(Amend(VdiskTool, format, img, "s1", "state=active,new-secret=s2,iter-time=10,keyslot=5"));
        QemuOpens(format, img, "s2");
        Ok(Amend(VdiskTool, format, img, "s1", "state=inactive,old-secret=s0"));
        QemuRefuses(format, img, "s0");
        QemuOpens(format, img, "s1");
        Ok(Amend(VdiskTool, format, img, "s2", "state=inactive,keyslot=1"));
        QemuRefuses(format, img, "s1");
        QemuOpens(format, img, "s2");
        // Slot 0 and 1 erased, slot 5 active: the header QEMU reads says so.
        var info = Ok(Img("info", "--output=json", img)).Stdout;
        Assert.Equal(1, CountOccurrences(info, "\"active\": true"));
        if (format == "qcow2")
        {
            var check = Img(["check", .. Secrets, "--image-opts", Opts(format, img, "s2")]);
            Assert.True(check.ExitCode == 0 && check.Stdout.StartsWith("No errors were found on the image.", StringComparison.Ordinal), check.ToString());
        }
    }

    [Theory]
    [MemberData(nameof(Formats))]
    public void SlotsQemuAddsAndErases_AreWhatVdiskOpens(string format)
    {
        using var dir = new TempDir();
        string img = Make(VdiskTool, dir, format, "v.img");
        // qemu-img times PBKDF2 for a new slot as for a new image: retried the same way.
        Ok(Amend(ImgCreateEncrypted, format, img, "s0", "state=active,new-secret=s1,iter-time=10"));
        Ok(Amend(Img, format, img, "s1", "state=inactive,old-secret=s0"));
        Ok(Qemu.Vdisk(["io", .. Secrets, "--image-opts", "-r", "-c", "read -P 0x5a 0 64k", Opts(format, img, "s1")]));
        var refused = Qemu.Vdisk(["io", .. Secrets, "--image-opts", "-r", "-c", "read 0 512", Opts(format, img, "s0")]);
        Assert.True(refused.ExitCode != 0 && refused.Stderr.Contains("Invalid password, cannot unlock any keyslot", StringComparison.Ordinal), refused.ToString());
    }

    [Theory]
    [MemberData(nameof(Formats))]
    public void Force_OverwritesAnActiveSlotAndErasesTheLast_AsQemu(string format)
    {
        using var dir = new TempDir();
        string img = Make(ImgCreateEncrypted, dir, format, "q.img");
        // Slot 0 overwritten with s1: s0 no longer opens.
        Ok(Amend(VdiskTool, format, img, "s0", "state=active,new-secret=s1,iter-time=10,keyslot=0", force: true));
        QemuRefuses(format, img, "s0");
        QemuOpens(format, img, "s1");
        // The last slot erased: nothing opens the image any more.
        Ok(Amend(VdiskTool, format, img, "s1", "state=inactive,keyslot=0", force: true));
        QemuRefuses(format, img, "s1");
    }

    private static readonly string[] RefusedOptions =
    [
        "keyslot=1", "state=foo", "state=active", "state=inactive",
        "state=active,keyslot=-1,new-secret=s1", "state=active,keyslot=8,new-secret=s1", "state=active,keyslot=0x10,new-secret=s1",
        "state=active,keyslot=4294967296,new-secret=s1", "state=active,keyslot=18446744073709551615,new-secret=s1", "state=active,keyslot=x,new-secret=s1",
        "state=active,keyslot=0,new-secret=s1", "state=active,new-secret=s9", "state=active,old-secret=s0,new-secret=s1", "state=active,iter-time=x,new-secret=s1",
        "state=inactive,keyslot=0", "state=inactive,keyslot=3", "state=inactive,keyslot=9", "state=inactive,old-secret=s1", "state=inactive,old-secret=s0",
        "state=inactive,old-secret=s9", "state=inactive,keyslot=0,old-secret=s1", "state=inactive,iter-time=5", "state=inactive,new-secret=s1",
    ];

    [Theory]
    [MemberData(nameof(Formats))]
    public void Refusals_GetQemusLine_AndChangeNothing(string format)
    {
        using var dir = new TempDir();
        string img = Make(ImgCreateEncrypted, dir, format, "q.img");
        var before = File.ReadAllBytes(img);
        foreach (var options in RefusedOptions)
        {
            var theirs = Amend(Img, format, img, "s0", options);
            Assert.True(theirs.ExitCode != 0, $"{options}: {theirs}");
            AssertSame(theirs, Amend(VdiskTool, format, img, "s0", options));
            Assert.Equal(before, File.ReadAllBytes(img));
        }
    }

    [Theory]
    [InlineData("encryption=on,encrypt.key-secret=s0", "Only LUKS encryption options can be amended")]
    [InlineData("", "Can't amend encryption options - encryption not present")]
    public void Qcow2WithoutLuks_RefusesKeySlotOptions_AsQemu(string createOptions, string message)
    {
        using var dir = new TempDir();
        string img = dir.File("a.qcow2");
        Ok(Img(["create", "-q", "-f", "qcow2", .. Secrets, .. createOptions.Length > 0 ? new[] { "-o", createOptions } : [], img, "1M"]));
        string opts = createOptions.Length > 0 ? Opts("qcow2", img, "s0") : $"driver=qcow2,file.filename={img}";
        foreach (var o in new[] { "encrypt.state=active,encrypt.new-secret=s1", "compat=0.10,encrypt.keyslot=1" })
        {
            var theirs = Img(["amend", .. Secrets, "--image-opts", opts, "-o", o]);
            Assert.Contains(message, theirs.Stderr, StringComparison.Ordinal);
            AssertSame(theirs, Qemu.Vdisk(["amend", .. Secrets, "--image-opts", opts, "-o", o]));
        }
    }

    [Theory]
    [InlineData("luks")]
    [InlineData("qcow2")]
    public void AmendHelp_ListsQemusOptions(string format) => Same(false, "amend", "-f", format, "-o", "help");

    /// <summary>
    /// A luks amend takes the file for exclusive writing while it changes the slots and gives it
    /// back after (block/crypto.c's updating_keys): the same lock calls as qemu-img, adding and erasing.
    /// </summary>
    [Fact]
    public void LuksAmend_MakesQemusLockCalls()
    {
        using var dir = new TempDir();
        string img = Make(ImgCreateEncrypted, dir, "luks", "q.img");
        string[] Args(string options) => ["amend", .. Secrets, "--image-opts", Opts("luks", img, "s0"), "-o", options];
        foreach (var (qemuOptions, vdiskOptions) in new[]
        {
            ("state=active,new-secret=s1,iter-time=10,keyslot=1", "state=active,new-secret=s1,iter-time=10,keyslot=2"),
            ("state=inactive,keyslot=1", "state=inactive,keyslot=2"),
        })
        {
            // qemu-img times PBKDF2 for a new slot.
            var (qr, qemuCalls) = RetryWhileQemuPbkdfTimingFails(() => LockTrace.Capture("qemu-img", Args(qemuOptions)), c => c.Result);
            var (vr, vdiskCalls) = LockTrace.Capture(Programs.Vdisk, Args(vdiskOptions));
            Assert.True(qr.ExitCode == 0, qr.ToString());
            Assert.True(vr.ExitCode == 0, vr.ToString());
            Assert.Equal(qemuCalls, vdiskCalls);
        }
    }

    private static int CountOccurrences(string text, string what)
    {
        int n = 0;
        for (int i = text.IndexOf(what, StringComparison.Ordinal); i >= 0; i = text.IndexOf(what, i + what.Length, StringComparison.Ordinal)) n++;
        return n;
    }
}
