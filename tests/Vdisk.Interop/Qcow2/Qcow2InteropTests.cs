using System.Globalization;
using Vdisk.Interop.Support;
using Xunit;

namespace Vdisk.Interop.Qcow2;

/// <summary>Images vdisk writes pass qemu-img check and match what QEMU writes; images QEMU writes read back through vdisk.</summary>
public class Qcow2InteropTests
{
    private static readonly string[] Workload =
    [
        "write -P 0xab 0 64k", "write -P 0x11 100k 3000", "write -z 1M 128k", "write -P 0x22 2M 1M",
        "discard 2M 64k", "write -z -u 2200k 100k", "write -P 0x33 5000 100", "write -P 0x44 3M 7k", "flush",
    ];

    public static TheoryData<string, string, bool> Layouts()
    {
        var data = new TheoryData<string, string, bool>();
        foreach (var cs in new[] { "512", "4096", "65536", "2M" })
            foreach (var compat in new[] { "0.10", "1.1" })
                foreach (var backing in new[] { false, true })
                    data.Add(cs, compat, backing);
        return data;
    }

    [Theory]
    [MemberData(nameof(Layouts))]
    public void Images_vdisk_writes_pass_qemu_img_check_and_match_qemu_io(string clusterSize, string compat, bool withBacking)
    {
        using var dir = new TempDir();
        string mine = dir.File("mine.qcow2"), theirs = dir.File("theirs.qcow2"), baseImg = dir.File("base.qcow2");
        var create = new List<string> { "create", "-q", "-f", "qcow2", "-o", $"cluster_size={clusterSize},compat={compat}" };
        if (withBacking)
        {
            Qemu.Ok(Qemu.Img("create", "-q", "-f", "qcow2", baseImg, "8M"));
            Qemu.Ok(Qemu.Io("-c", "write -P 0x77 0 8M", baseImg));
            create.AddRange(["-b", "base.qcow2", "-F", "qcow2"]);
        }
        Qemu.Ok(Qemu.Vdisk([.. create, mine, "8M"]));
        Qemu.Ok(Qemu.Img([.. create, theirs, "8M"]));
        Qemu.Ok(Qemu.Vdisk(["io", .. Qemu.Commands(Workload), mine]));
        Qemu.Ok(Qemu.Io([.. Qemu.Commands(Workload), theirs]));
        Qemu.AssertClean(mine);
        Qemu.AssertIdentical(mine, theirs);
    }

    [Theory]
    [InlineData("metadata")]
    [InlineData("falloc")]
    [InlineData("full")]
    public void Preallocated_images_pass_check_and_read_as_zeroes(string mode)
    {
        using var dir = new TempDir();
        string img = dir.File("p.qcow2");
        Qemu.Ok(Qemu.Vdisk("create", "-q", "-f", "qcow2", "-o", $"preallocation={mode}", img, "4M"));
        Qemu.AssertClean(img);
        var raw = dir.RawImage("zero.raw", 4 << 20);
        Qemu.AssertIdentical(img, raw);
        Assert.True(new FileInfo(img).Length >= 4 << 20);
    }

    [Theory]
    [InlineData("zlib")]
    [InlineData("zstd")]
    public void Compressed_convert_passes_check_and_matches_the_source(string type)
    {
        using var dir = new TempDir();
        string src = dir.File("src.qcow2"), dst = dir.File("dst.qcow2");
        Qemu.Ok(Qemu.Img("create", "-q", "-f", "qcow2", src, "4M"));
        Qemu.Ok(Qemu.Io(Qemu.Commands(["write -P 0x41 0 1M", "write -P 0x42 1536k 100k", "write 3M 64k"]).Append(src).ToArray()));
        Qemu.Ok(Qemu.Vdisk("convert", "-c", "-O", "qcow2", "-o", $"compression_type={type}", src, dst));
        Qemu.AssertClean(dst);
        Qemu.AssertIdentical(src, dst);
        var check = Qemu.Img("check", "--output=json", dst).Stdout;
        Assert.Contains("\"compressed-clusters\"", check);
        Qemu.Ok(Qemu.Vdisk("io", "-c", "write -c -P 0x55 3M 64k", dst));
        Qemu.AssertClean(dst);
        Qemu.Ok(Qemu.Io("-r", "-c", "read -P 0x55 3M 64k", dst));
    }

    public static TheoryData<string, string[]> QemuImages() => new()
    {
        { "zlib-compressed", ["create-compressed", "zlib"] },
        { "zstd-compressed", ["create-compressed", "zstd"] },
        { "lazy-refcounts", ["create", "-o", "lazy_refcounts=on"] },
        { "512-clusters", ["create", "-o", "cluster_size=512"] },
        { "2M-clusters", ["create", "-o", "cluster_size=2M"] },
        { "v2", ["create", "-o", "compat=0.10"] },
        { "refcount-bits-1", ["create", "-o", "refcount_bits=1"] },
        { "refcount-bits-64", ["create", "-o", "refcount_bits=64"] },
        { "snapshots", ["create-snapshots"] },
        { "chain-3-deep", ["create-chain"] },
    };

    [Theory]
    [MemberData(nameof(QemuImages))]
    public void Images_qemu_writes_read_back_byte_identical(string name, string[] recipe)
    {
        using var dir = new TempDir();
        string img = dir.File(name + ".qcow2");
        string[] writes = ["write -P 0x61 0 300k", "write -P 0x62 1M 64k", "write -z 1536k 64k", "write -P 0x63 2M 1M", "discard 2M 64k"];
        switch (recipe[0])
        {
            case "create":
                Qemu.Ok(Qemu.Img([.. new[] { "create", "-q", "-f", "qcow2" }, .. recipe[1..], img, "4M"]));
                Qemu.Ok(Qemu.Io([.. Qemu.Commands(writes), img]));
                break;
            case "create-compressed":
                string plain = dir.File("plain.qcow2");
                Qemu.Ok(Qemu.Img("create", "-q", "-f", "qcow2", plain, "4M"));
                Qemu.Ok(Qemu.Io([.. Qemu.Commands(writes), plain]));
                Qemu.Ok(Qemu.Img("convert", "-c", "-O", "qcow2", "-o", $"compression_type={recipe[1]}", plain, img));
                break;
            case "create-snapshots":
                Qemu.Ok(Qemu.Img("create", "-q", "-f", "qcow2", img, "4M"));
                Qemu.Ok(Qemu.Io([.. Qemu.Commands(writes[..2]), img]));
                Qemu.Ok(Qemu.Img("snapshot", "-c", "s1", img));
                Qemu.Ok(Qemu.Io([.. Qemu.Commands(writes[2..]), img]));
                Qemu.Ok(Qemu.Img("snapshot", "-c", "s2", img));
                Qemu.Ok(Qemu.Io("-c", "write -P 0x64 0 64k", img));
                break;
            case "create-chain":
                string a = dir.File("a.qcow2"), b = dir.File("b.qcow2");
                Qemu.Ok(Qemu.Img("create", "-q", "-f", "qcow2", a, "4M"));
                Qemu.Ok(Qemu.Io("-c", "write -P 0x01 0 4M", a));
                Qemu.Ok(Qemu.Img("create", "-q", "-f", "qcow2", "-b", "a.qcow2", "-F", "qcow2", b));
                Qemu.Ok(Qemu.Io("-c", "write -P 0x02 1M 1M", b));
                Qemu.Ok(Qemu.Img("create", "-q", "-f", "qcow2", "-b", "b.qcow2", "-F", "qcow2", img));
                Qemu.Ok(Qemu.Io([.. Qemu.Commands(writes), img]));
                break;
        }
        string expected = dir.File("expected.raw"), actual = dir.File("actual.raw");
        Qemu.Ok(Qemu.Img("convert", "-O", "raw", img, expected));
        Qemu.Ok(Qemu.Vdisk("convert", "-O", "raw", img, actual));
        Assert.True(File.ReadAllBytes(expected).AsSpan().SequenceEqual(File.ReadAllBytes(actual)), "contents differ");
        Qemu.Ok(Qemu.Vdisk("check", img));
    }

    [Fact]
    public void Info_and_check_json_match_qemu_img_byte_for_byte()
    {
        using var dir = new TempDir();
        string b = dir.File("b.qcow2"), o = dir.File("o.qcow2");
        Qemu.Ok(Qemu.Img("create", "-q", "-f", "qcow2", b, "64M"));
        Qemu.Ok(Qemu.Img("create", "-q", "-f", "qcow2", "-b", "b.qcow2", "-F", "qcow2", o));
        Qemu.Ok(Qemu.Io("-c", "write 0 1M", o));
        Qemu.Ok(Qemu.Img("snapshot", "-c", "snap", o));
        foreach (var args in new[] { new[] { "info", "--output=json", o }, ["info", o], ["info", "--backing-chain", o], ["check", "--output=json", o], ["check", o], ["map", "--output=json", o], ["map", o] })
        {
            var expected = Qemu.Img(args);
            var actual = Qemu.Vdisk(args);
            Assert.Equal(expected.ExitCode, actual.ExitCode);
            Assert.Equal(expected.Stdout, actual.Stdout);
        }
    }

    [Fact]
    public void Check_reports_and_repairs_leaks_with_qemus_exit_codes()
    {
        using var dir = new TempDir();
        string img = dir.File("leak.qcow2");
        Qemu.Ok(Qemu.Img("create", "-q", "-f", "qcow2", img, "4M"));
        Qemu.Ok(Qemu.Io("-c", "write 0 128k", img));
        // Raise the refcount of the L1 cluster's neighbour past the end of the used area: a leak.
        using (var f = new FileStream(img, FileMode.Open, FileAccess.ReadWrite))
        {
            long clusters = (f.Length + 65535) / 65536;
            f.SetLength((clusters + 1) * 65536);
            f.Position = 0x20000 + clusters * 2;
            f.Write([0, 1]);
        }
        var expected = Qemu.Img("check", img);
        var actual = Qemu.Vdisk("check", img);
        Assert.Equal(3, expected.ExitCode);
        Assert.Equal(expected.ExitCode, actual.ExitCode);
        Assert.Equal(expected.Stdout, actual.Stdout);
        Assert.Equal(expected.Stderr, actual.Stderr);
        var repaired = Qemu.Vdisk("check", "-r", "leaks", img);
        Assert.Equal(0, repaired.ExitCode);
        Assert.Contains("The following inconsistencies were found and repaired:", repaired.Stdout);
        Qemu.AssertClean(img);
    }

    /// <summary>
    /// An autoclear bit vdisk and QEMU do not know (iotest 036 sets bit 63): a read-only open leaves
    /// it, a read-write open clears it as qemu-img does, before anything is written.
    /// </summary>
    [Theory]
    [InlineData("info")]
    [InlineData("check")]
    [InlineData("check -r all")]
    [InlineData("amend -o lazy_refcounts=off")]
    public void Unknown_autoclear_bits_are_cleared_by_read_write_opens_as_qemu_clears_them(string verb)
    {
        using var dir = new TempDir();
        ulong AutoclearAfter(Func<string[], RunResult> tool, string name)
        {
            string img = dir.File(name);
            Qemu.Ok(Qemu.Img("create", "-q", "-f", "qcow2", img, "4M"));
            using (var f = new FileStream(img, FileMode.Open, FileAccess.ReadWrite))
            {
                f.Position = 88;
                f.Write([0x80, 0, 0, 0, 0, 0, 0, 0]);
            }
            Qemu.Ok(tool([.. verb.Split(' '), img]));
            var field = new byte[8];
            using (var f = new FileStream(img, FileMode.Open, FileAccess.Read))
            {
                f.Position = 88;
                f.ReadExactly(field);
            }
            return System.Buffers.Binary.BinaryPrimitives.ReadUInt64BigEndian(field);
        }
        ulong theirs = AutoclearAfter(Qemu.Img, "theirs.qcow2"), mine = AutoclearAfter(Qemu.Vdisk, "mine.qcow2");
        Assert.Equal(verb.StartsWith("info", StringComparison.Ordinal) || verb == "check" ? 1UL << 63 : 0UL, theirs);
        Assert.Equal(theirs, mine);
    }

    [Fact]
    public void Raw_images_do_not_support_checks()
    {
        using var dir = new TempDir();
        var r = Qemu.Vdisk("check", dir.RawImage());
        Assert.Equal(63, r.ExitCode);
        Assert.Equal("vdisk: This image format does not support checks\n", r.Stderr);
    }

    [Fact]
    public void Verbs_resize_commit_rebase_amend_keep_images_valid()
    {
        using var dir = new TempDir();
        string b = dir.File("b.qcow2"), o = dir.File("o.qcow2"), other = dir.File("other.qcow2");
        Qemu.Ok(Qemu.Vdisk("create", "-q", "-f", "qcow2", b, "4M"));
        Qemu.Ok(Qemu.Vdisk("io", "-c", "write -P 1 0 2M", b));
        Qemu.Ok(Qemu.Vdisk("create", "-q", "-f", "qcow2", "-b", "b.qcow2", "-F", "qcow2", o));
        Qemu.Ok(Qemu.Vdisk("io", "-c", "write -P 2 1M 2M", o));
        Assert.Equal("Image committed.\n", Qemu.Ok(Qemu.Vdisk("commit", o)).Stdout);
        Qemu.AssertClean(b);
        Qemu.AssertClean(o);
        Qemu.Ok(Qemu.Io("-r", "-c", "read -P 1 0 1M", "-c", "read -P 2 1M 2M", o));
        Qemu.Ok(Qemu.Vdisk("create", "-q", "-f", "qcow2", other, "4M"));
        Qemu.Ok(Qemu.Vdisk("rebase", "-b", "other.qcow2", "-F", "qcow2", o));
        Qemu.Ok(Qemu.Io("-r", "-c", "read -P 1 0 1M", "-c", "read -P 2 1M 2M", o));
        Qemu.AssertClean(o);
        Assert.Equal("Image resized.\n", Qemu.Ok(Qemu.Vdisk("resize", o, "+4M")).Stdout);
        var shrink = Qemu.Vdisk("resize", o, "-1M");
        Assert.Equal(1, shrink.ExitCode);
        Assert.StartsWith("vdisk: Use the --shrink option to perform a shrink operation.\n", shrink.Stderr);
        Qemu.Ok(Qemu.Vdisk("resize", "--shrink", o, "2M"));
        Qemu.Ok(Qemu.Vdisk("amend", "-o", "lazy_refcounts=on", o));
        Qemu.AssertClean(o);
        Assert.Contains("lazy refcounts: true", Qemu.Img("info", o).Stdout);
        foreach (var verb in new[] { "amend", "commit", "resize" })
        {
            var r = Qemu.Vdisk(verb, "-U", o, "1M");
            Assert.Equal(1, r.ExitCode);
            Assert.StartsWith("vdisk: unrecognized option '-U'", r.Stderr);
        }
    }

    [Fact]
    public void Create_over_an_image_in_use_fails_and_leaves_it_untouched()
    {
        using var dir = new TempDir();
        string img = dir.File("busy.qcow2");
        Qemu.Ok(Qemu.Img("create", "-q", "-f", "qcow2", img, "1M"));
        var before = File.ReadAllBytes(img);
        using var holder = Holder.Start(img, "qemu-io", "-c", "sleep 100000", img);
        var r = Qemu.Vdisk("create", "-f", "qcow2", img, "2M");
        Assert.Equal(1, r.ExitCode);
        Assert.Equal($"vdisk: {img}: Failed to get \"write\" lock\nIs another process using the image [{img}]?\n", r.Stderr);
        Assert.Equal(before, File.ReadAllBytes(img));
    }

    public static TheoryData<string> PlacementWorkloads => new()
    {
        // After a write in place, the rest of the request goes right behind it when that is free
        // (qcow2_alloc_clusters_at), not into the first hole: here the hole left by the discard.
        "write 0 4k|write 8k 4k|write 16k 4k|discard 0 4k|flush|write 16k 8k",
        // The cluster behind is taken: the rest goes to the first free one.
        "write 0 4k|write 4k 4k|write 12k 4k|discard 4k 4k|flush|write 12k 8k",
        // A new refcount block goes behind the clusters whose allocation needed it (512-byte
        // clusters: one block covers 256 of them), not in front of them.
        "write 0 120k|write 120k 20k|write 200k 1k",
        // A discard where no L2 table is gets one, as QEMU's discard_in_l2_slice allocates it.
        "write 0 4k|discard 4M 64k|write 8k 4k",
    };

    /// <summary>
    /// New clusters land where qemu-io puts them, so images (and qemu-img map of them) look the
    /// same whichever tool wrote them. vdisk used to take the first free cluster for every
    /// allocation and put a new refcount block in front of the clusters that needed it.
    /// </summary>
    [Theory]
    [MemberData(nameof(PlacementWorkloads))]
    public void New_clusters_are_placed_where_qemu_io_places_them(string workload)
    {
        using var dir = new TempDir();
        var maps = new List<string>();
        foreach (var (name, tool) in new[] { ("qemu", new[] { "qemu-io" }), ("vdisk", new[] { Programs.Vdisk, "io" }) })
        {
            string img = dir.File(name + ".qcow2");
            string clusterSize = workload.Contains("120k") ? "512" : "4k";
            Qemu.Ok(Qemu.Img("create", "-q", "-f", "qcow2", "-o", $"cluster_size={clusterSize}", img, "8M"));
            var args = new List<string>(tool.Skip(1));
            foreach (var command in workload.Split('|')) args.AddRange(["-c", command]);
            args.Add(img);
            Qemu.Ok(Programs.Run(tool[0], [.. args]));
            string check = Qemu.Ok(Qemu.Img("check", img)).Stdout;
            maps.Add(Qemu.Ok(Qemu.Img("map", "--output=json", img)).Stdout + check);
        }
        Assert.Equal(maps[0], maps[1]);
    }

    /// <summary>
    /// iotest 066's last case: a write over a data cluster, a preallocated zero cluster and a data
    /// cluster, all in place and contiguous, is one request (blkdebug fails a second write_aio), and
    /// the zero cluster becomes data where it was. vdisk used to write the zero cluster separately.
    /// </summary>
    [Fact]
    public void A_write_through_a_preallocated_zero_cluster_goes_in_place_as_one_request()
    {
        using var dir = new TempDir();
        var seen = new List<string>();
        foreach (var (name, tool) in new[] { ("qemu", new[] { "qemu-io" }), ("vdisk", new[] { Programs.Vdisk, "io" }) })
        {
            string img = dir.File(name + ".qcow2");
            Qemu.Ok(Qemu.Img("create", "-q", "-f", "qcow2", img, "192k"));
            Qemu.Ok(Qemu.Io("-c", "write -P 42 0 192k", img));
            Qemu.Ok(Qemu.Io("-c", "write -z 64k 64k", img));
            string json = "json:{'driver': 'qcow2', 'file': {'driver': 'blkdebug', 'image.filename': '" + img + "', " +
                "'set-state': [{'event': 'write_aio', 'new_state': 2}], 'inject-error': [{'event': 'write_aio', 'state': 2}]}}";
            var r = Programs.Run(tool[0], [.. tool.Skip(1), "-c", "write -P 42 0 192k", json]);
            string stdout = string.Join("\n", r.Stdout.Split('\n').Where(l => !l.Contains(" ops; ", StringComparison.Ordinal)));
            seen.Add($"exit {r.ExitCode}\n{stdout}\n{r.Stderr}\n{Qemu.Ok(Qemu.Img("map", "--output=json", img)).Stdout}{Qemu.Img("check", img).Stdout}");
        }
        Assert.Contains("wrote 196608/196608 bytes at offset 0", seen[0]);
        Assert.Equal(seen[0], seen[1].Replace(dir.File("vdisk.qcow2"), dir.File("qemu.qcow2")));
    }

    internal static string Size(long v) => v.ToString(CultureInfo.InvariantCulture);

    [Theory]
    [InlineData("metadata", "")]
    [InlineData("metadata", "write -P 1 1M 64k")]
    [InlineData("metadata", "discard 0 64k")]
    [InlineData("off", "write -P 1 1M 64k")]
    [InlineData("falloc", "write -P 1 1M 64k")]
    [InlineData("full", "write -z 2M 64k")]
    public void Map_of_a_preallocated_image_shows_never_written_clusters_as_qemu_does(string preallocation, string write)
    {
        // iotest 250: with metadata preallocation detected (more clusters in use than the file
        // holds), data clusters ask the file, and its holes map as zeroes.
        using var dir = new TempDir();
        string img = dir.File("p.qcow2");
        Qemu.Ok(Qemu.Img("create", "-q", "-f", "qcow2", "-o", $"preallocation={preallocation}", img, "4M"));
        if (write.Length > 0) Qemu.Ok(Qemu.Io("-f", "qcow2", img, "-c", write));
        foreach (var output in new[] { "json", "human" })
        {
            var q = Qemu.Img("map", $"--output={output}", img);
            var v = Qemu.Vdisk("map", $"--output={output}", img);
            Assert.Equal(q.Stdout, v.Stdout);
        }
        Assert.Equal(Qemu.Io("-r", "-f", "qcow2", img, "-c", "map").Stdout, Qemu.Vdisk("io", "-r", "-f", "qcow2", img, "-c", "map").Stdout);
    }
}
