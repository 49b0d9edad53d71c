using Vdisk.Interop.Qcow2;
using Vdisk.Interop.Support;
using Xunit;

namespace Vdisk.Interop.Vmdk;

/// <summary>Runs a QEMU tool and vdisk's twin with the same arguments and compares what users see.</summary>
internal static class VmdkSideBySide
{
    /// <summary>The QEMU program a vdisk verb stands for.</summary>
    private static (string Program, string[] Args) Qemu(string[] vdiskArgs) =>
        vdiskArgs[0] == "io" ? ("qemu-io", vdiskArgs[1..]) : ("qemu-img", vdiskArgs);

    /// <summary>Runs vdisk.</summary>
    public static RunResult VdiskRun(params string[] args) => Programs.Run(Programs.Vdisk, args);

    /// <summary>Output with the program's name (qemu-img, qemu-io, vdisk) replaced by PROG.</summary>
    /// <remarks>qemu-io's timing figures ("00.00 sec (62.813 MiB/sec and ...)") are masked too.</remarks>
    public static string Normalized(string text) =>
        System.Text.RegularExpressions.Regex.Replace(text.Replace("qemu-img: ", "PROG: ").Replace("qemu-io: ", "PROG: ").Replace("vdisk: ", "PROG: "),
            @"\d+:?\d*\.\d+ sec \([^)]*\)", "TIME");

    /// <summary>Exit code, stdout and stderr of one run, program names normalized.</summary>
    public static string Seen(RunResult r) => $"exit {r.ExitCode}\n--- stdout\n{Normalized(r.Stdout)}--- stderr\n{Normalized(r.Stderr)}";

    /// <summary>Runs both on the same files; asserts the same exit code, stdout and stderr.</summary>
    public static void AssertSame(params string[] vdiskArgs)
    {
        var (program, args) = Qemu(vdiskArgs);
        var q = Programs.Run(program, args);
        var v = Programs.Run(Programs.Vdisk, vdiskArgs);
        Assert.Equal(Seen(q), Seen(v));
    }

    /// <summary>Both programs' views of the guest: converted to raw by each, the two files must hold the same bytes.</summary>
    public static void AssertSameGuestBytes(string dir, string image, params string[] openArgs)
    {
        string q = Path.Combine(dir, "qemu-view.raw"), v = Path.Combine(dir, "vdisk-view.raw");
        Support.Qemu.Ok(Programs.Run("qemu-img", ["convert", .. openArgs, "-O", "raw", image, q]));
        Support.Qemu.Ok(Programs.Run(Programs.Vdisk, ["convert", .. openArgs, "-O", "raw", image, v]));
        Assert.True(FilesEqual(q, v), $"vdisk reads {image} differently from qemu-img");
        File.Delete(q);
        File.Delete(v);
    }

    /// <summary>Byte equality of two (possibly sparse, large) files, comparing 1 MiB at a time.</summary>
    public static bool FilesEqual(string a, string b)
    {
        using var fa = File.OpenRead(a);
        using var fb = File.OpenRead(b);
        if (fa.Length != fb.Length) return false;
        var ba = new byte[1 << 20];
        var bb = new byte[1 << 20];
        while (true)
        {
            int na = fa.ReadAtLeast(ba, ba.Length, throwOnEndOfStream: false);
            int nb = fb.ReadAtLeast(bb, bb.Length, throwOnEndOfStream: false);
            if (na != nb || !ba.AsSpan(0, na).SequenceEqual(bb.AsSpan(0, nb))) return false;
            if (na == 0) return true;
        }
    }
}
