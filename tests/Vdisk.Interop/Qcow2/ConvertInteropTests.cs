using System.Text.Json;
using Vdisk.Interop.Support;
using Xunit;

namespace Vdisk.Interop.Qcow2;

/// <summary>
/// vdisk convert on a 64 MiB image mixing random data, allocated zeroes, holes and odd
/// boundaries: every output compares identical to the source and checks clean; raw to qcow2
/// output is byte for byte what qemu-img convert writes.
/// </summary>
public class ConvertInteropTests
{
    private static string MixedRaw(TempDir dir)
    {
        string random = dir.File("random.bin"), img = dir.File("mixed.raw");
        var bytes = new byte[3 << 20];
        new Random(7).NextBytes(bytes);
        File.WriteAllBytes(random, bytes);
        Qemu.Ok(Qemu.Img("create", "-q", "-f", "raw", img, "64M"));
        Qemu.Ok(Qemu.Io([.. new[] { "-f", "raw" }, .. Qemu.Commands(
        [
            $"write -s {random} 0 3M", "write -P 0 1M 64k", "write -P 0 4M 1M", "write -P 0x22 10240512 70000",
            "write -P 0x33 12345k 300k", "write -z 20M 2M", $"write -s {random} 30M 3M", "write -P 0 31M 4k",
            "write -P 0x44 67108352 512",
        ]), img]));
        return img;
    }

    /// <summary>qemu-img map without host offsets, neighbours of one kind merged: what the guest sees where.</summary>
    private static List<string> GuestMap(string image)
    {
        var extents = new List<(long Start, long Length, string Kind)>();
        using var map = JsonDocument.Parse(Qemu.Ok(Qemu.Img("map", "--output=json", image)).Stdout);
        foreach (var e in map.RootElement.EnumerateArray())
        {
            string kind = $"present={e.GetProperty("present")} zero={e.GetProperty("zero")} data={e.GetProperty("data")} depth={e.GetProperty("depth")}";
            long start = e.GetProperty("start").GetInt64(), length = e.GetProperty("length").GetInt64();
            if (extents.Count > 0 && extents[^1].Kind == kind && extents[^1].Start + extents[^1].Length == start)
                extents[^1] = extents[^1] with { Length = extents[^1].Length + length };
            else extents.Add((start, length, kind));
        }
        return extents.Select(e => $"{e.Start}+{e.Length} {e.Kind}").ToList();
    }

    private static long AllocatedClusters(string image)
    {
        using var check = JsonDocument.Parse(Qemu.Ok(Qemu.Img("check", "--output=json", image)).Stdout);
        return check.RootElement.GetProperty("allocated-clusters").GetInt64();
    }

    [Theory]
    [InlineData("")]
    [InlineData("-S 0")]
    [InlineData("-S 64k")]
    [InlineData("-m 1")]
    [InlineData("-m 16 -W")]
    public void Raw_to_qcow2_matches_qemu_img_byte_for_byte(string optionText)
    {
        string[] options = optionText.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        using var dir = new TempDir();
        string src = MixedRaw(dir), mine = dir.File("mine.qcow2"), theirs = dir.File("theirs.qcow2");
        Qemu.Ok(Qemu.Vdisk([.. new[] { "convert", "-O", "qcow2" }, .. options, src, mine]));
        Qemu.AssertClean(mine);
        Qemu.AssertIdentical(src, mine);
        Qemu.Ok(Qemu.Img([.. new[] { "convert", "-O", "qcow2" }, .. options, src, theirs]));
        if (options.Contains("-W"))
        {
            // Out-of-order writes may place clusters elsewhere in the file, but the same guest
            // ranges must be data, zero or holes, in the same number of clusters.
            Assert.Equal(GuestMap(theirs), GuestMap(mine));
            Assert.Equal(AllocatedClusters(theirs), AllocatedClusters(mine));
        }
        else
        {
            Assert.True(File.ReadAllBytes(mine).AsSpan().SequenceEqual(File.ReadAllBytes(theirs)), "layout differs from qemu-img's");
        }
    }

    [Fact]
    public void Qcow2_to_raw_to_qcow2_compressed_round_trips()
    {
        using var dir = new TempDir();
        string src = MixedRaw(dir), q = dir.File("q.qcow2"), raw = dir.File("back.raw"), packed = dir.File("packed.qcow2");
        Qemu.Ok(Qemu.Img("convert", "-O", "qcow2", src, q));
        Qemu.Ok(Qemu.Vdisk("convert", "-O", "raw", q, raw));
        Qemu.AssertIdentical(src, raw);
        Assert.True(File.ReadAllBytes(src).AsSpan().SequenceEqual(File.ReadAllBytes(raw)), "raw output differs");
        Qemu.Ok(Qemu.Vdisk("convert", "-c", "-O", "qcow2", q, packed));
        Qemu.AssertClean(packed);
        Qemu.AssertIdentical(src, packed);
        Assert.Contains("\"compressed-clusters\"", Qemu.Img("check", "--output=json", packed).Stdout);
        string unordered = dir.File("unordered.qcow2"); // -W with -c is accepted, as by qemu-img 7.2
        Qemu.Ok(Qemu.Vdisk("convert", "-c", "-W", "-m", "4", "-O", "qcow2", q, unordered));
        Qemu.AssertClean(unordered);
        Qemu.AssertIdentical(src, unordered);
    }

    [Fact]
    public void Sparse_size_zero_allocates_the_whole_target_like_qemu_img()
    {
        using var dir = new TempDir();
        string src = MixedRaw(dir), mine = dir.File("mine.raw"), theirs = dir.File("theirs.raw");
        Qemu.Ok(Qemu.Vdisk("convert", "-S", "0", "-O", "raw", src, mine));
        Qemu.Ok(Qemu.Img("convert", "-S", "0", "-O", "raw", src, theirs));
        Qemu.AssertIdentical(src, mine);
        Assert.Equal(Qemu.Img("map", "--output=json", theirs).Stdout, Qemu.Img("map", "--output=json", mine).Stdout);
        Assert.DoesNotContain("\"data\": false", Qemu.Img("map", "--output=json", mine).Stdout);
    }

    [Theory]
    [InlineData("qcow2")]
    [InlineData("raw")]
    public void Converting_onto_an_existing_image_zeroes_what_the_source_does_not_hold(string format)
    {
        using var dir = new TempDir();
        string src = MixedRaw(dir), target = dir.File("existing." + format);
        Qemu.Ok(Qemu.Img("create", "-q", "-f", format, target, "64M"));
        Qemu.Ok(Qemu.Io("-f", format, "-c", "write -P 0xee 0 64M", target));
        Qemu.Ok(Qemu.Vdisk("convert", "-n", "-O", format, src, target));
        Qemu.AssertIdentical(src, target);
        if (format == "qcow2") Qemu.AssertClean(target);
    }

    [Fact]
    public void Zero_clusters_above_a_backing_file_stay_zero_with_B()
    {
        using var dir = new TempDir();
        string baseImg = dir.File("base.qcow2"), top = dir.File("top.qcow2"), mine = dir.File("mine.qcow2"), theirs = dir.File("theirs.qcow2");
        Qemu.Ok(Qemu.Img("create", "-q", "-f", "qcow2", baseImg, "8M"));
        Qemu.Ok(Qemu.Io("-c", "write -P 0xaa 0 8M", baseImg));
        Qemu.Ok(Qemu.Img("create", "-q", "-f", "qcow2", "-b", baseImg, "-F", "qcow2", top));
        Qemu.Ok(Qemu.Io("-c", "write -z 1M 1M", "-c", "write -P 0x11 3M 64k", top));
        Qemu.Ok(Qemu.Vdisk("convert", "-O", "qcow2", "-B", baseImg, "-F", "qcow2", top, mine));
        Qemu.Ok(Qemu.Img("convert", "-O", "qcow2", "-B", baseImg, "-F", "qcow2", top, theirs));
        Qemu.AssertClean(mine);
        Qemu.AssertIdentical(top, mine);
        Assert.True(File.ReadAllBytes(mine).AsSpan().SequenceEqual(File.ReadAllBytes(theirs)), "layout differs from qemu-img's");
    }
}
