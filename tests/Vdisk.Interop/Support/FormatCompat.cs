using System.Globalization;
using Xunit;
using static Vdisk.Interop.Support.Qemu;

namespace Vdisk.Interop.Support;

/// <summary>
/// Shared steps of the vpc, vhdx and vdi interop tests: images made and filled by qemu-img and
/// qemu-io, one command run by QEMU's tool and by vdisk on the same file with what a script sees
/// compared ("qemu-img:"/"qemu-io:" read "vdisk:"), and byte patches for damaged images.
/// </summary>
internal static class FormatCompat
{
    public static string Inv(long v) => v.ToString(CultureInfo.InvariantCulture);

    /// <summary>qemu-img create -f <paramref name="format"/> [-o options] then qemu-io writes.</summary>
    public static string Make(TempDir dir, string name, string format, string options, string size, params string[] writes)
    {
        string img = dir.File(name);
        var create = new List<string> { "create", "-q", "-f", format };
        if (options.Length > 0) create.AddRange(["-o", options]);
        Ok(Img([.. create, img, size]));
        if (writes.Length > 0) Ok(Io(["-f", format, .. writes.SelectMany(w => new[] { "-c", w }), img]));
        return img;
    }

    /// <summary>Runs qemu-img (or qemu-io with <paramref name="io"/>) and vdisk with the same arguments and asserts the same result.</summary>
    public static void Same(bool io, params string[] args)
    {
        var theirs = io ? Io(args) : Img(args);
        var mine = io ? Qemu.Vdisk(["io", .. args]) : Qemu.Vdisk(args);
        AssertSame(theirs, mine);
    }

    /// <summary>Same exit code, stdout and stderr, the program name aside.</summary>
    public static void AssertSame(RunResult theirs, RunResult mine)
    {
        string context = $"QEMU: {theirs}\nvdisk: {mine}";
        Assert.True(theirs.ExitCode == mine.ExitCode, $"exit codes differ\n{context}");
        Assert.True(theirs.Stdout == mine.Stdout, $"stdout differs\n{context}");
        string expected = theirs.Stderr.Replace("qemu-img: ", "vdisk: ", StringComparison.Ordinal).Replace("qemu-io: ", "vdisk: ", StringComparison.Ordinal);
        Assert.True(expected == mine.Stderr, $"stderr differs\n{context}");
    }

    /// <summary>info (human and JSON) and map (human and JSON) print what qemu-img prints.</summary>
    public static void SameInfoAndMap(string img, string? format = null)
    {
        string[] f = format is null ? [] : ["-f", format];
        foreach (var output in new[] { "human", "json" })
        {
            Same(false, ["info", $"--output={output}", .. f, img]);
            Same(false, ["map", $"--output={output}", .. f, img]);
        }
    }

    /// <summary>vdisk's conversion to raw has the same bytes as qemu-img's.</summary>
    public static void SameContent(TempDir dir, string img, string? format = null)
    {
        string[] f = format is null ? [] : ["-f", format];
        string theirs = dir.File("theirs.raw"), mine = dir.File("mine.raw");
        File.Delete(theirs);
        File.Delete(mine);
        Ok(Img(["convert", .. f, "-O", "raw", img, theirs]));
        Ok(Qemu.Vdisk(["convert", .. f, "-O", "raw", img, mine]));
        Assert.Equal(new FileInfo(theirs).Length, new FileInfo(mine).Length);
        var cmp = Programs.Run("cmp", theirs, mine);
        Assert.True(cmp.ExitCode == 0, cmp.ToString());
        File.Delete(theirs);
        File.Delete(mine);
    }

    /// <summary>qemu-img compare says the two images are identical.</summary>
    public static void AssertIdentical(string a, string b, string? formatA = null, string? formatB = null)
    {
        var args = new List<string> { "compare" };
        if (formatA is not null) args.AddRange(["-f", formatA]);
        if (formatB is not null) args.AddRange(["-F", formatB]);
        var r = Img([.. args, a, b]);
        Assert.True(r.ExitCode == 0 && r.Stdout.Contains("Images are identical."), r.ToString());
    }

    /// <summary>Writes <paramref name="bytes"/> at <paramref name="offset"/> of the file.</summary>
    public static void Patch(string path, long offset, ReadOnlySpan<byte> bytes)
    {
        using var f = new FileStream(path, FileMode.Open, FileAccess.ReadWrite);
        f.Position = offset;
        f.Write(bytes);
    }

    /// <summary>Reads <paramref name="length"/> bytes at <paramref name="offset"/> of the file.</summary>
    public static byte[] Read(string path, long offset, int length)
    {
        using var f = new FileStream(path, FileMode.Open, FileAccess.Read);
        f.Position = offset;
        var buffer = new byte[length];
        f.ReadExactly(buffer);
        return buffer;
    }
}
