using System.Buffers.Binary;
using Vdisk.Interop.Support;
using Xunit;

namespace Vdisk.Interop.Qcow2;

/// <summary>
/// Damage is reported as QEMU reports it: images made by qemu-img, bytes mutated, then vdisk's
/// check (human, JSON, exit code, stderr lines) and reads are compared with qemu-img and qemu-io
/// on the same file.
/// </summary>
public class Qcow2DamageTests
{
    /// <summary>Where the tables of a freshly made image are (64 KiB clusters).</summary>
    private sealed class Layout(FileStream f)
    {
        public FileStream File { get; } = f;
        public long L1 => (long)U64(40);
        public long RefcountTable => (long)U64(48);
        public long RefcountBlock => (long)U64(RefcountTable);
        public long L2 => (long)(U64(L1) & 0x00fffffffffffe00UL);
        public long Snapshots => (long)U64(64);
        /// <summary>The first L2 table of the first snapshot (still the pre-snapshot table: the active one was copied on write).</summary>
        public long SnapshotL2 => (long)(U64((long)U64(Snapshots)) & 0x00fffffffffffe00UL);
        public long SnapshotL1 => (long)U64(Snapshots);
        public long L2Entry(int i) => L2 + 8L * i;

        public ulong U64(long at)
        {
            var b = new byte[8];
            File.Position = at;
            File.ReadExactly(b);
            return BinaryPrimitives.ReadUInt64BigEndian(b);
        }

        public void W64(long at, ulong v)
        {
            var b = new byte[8];
            BinaryPrimitives.WriteUInt64BigEndian(b, v);
            File.Position = at;
            File.Write(b);
        }

        public void W32(long at, uint v)
        {
            var b = new byte[4];
            BinaryPrimitives.WriteUInt32BigEndian(b, v);
            File.Position = at;
            File.Write(b);
        }

        public void W16(long at, ushort v)
        {
            var b = new byte[2];
            BinaryPrimitives.WriteUInt16BigEndian(b, v);
            File.Position = at;
            File.Write(b);
        }
    }

    private const ulong Copied = 1UL << 63;

    private static readonly Dictionary<string, (string Base, Action<Layout> Mutate)> Damages = new()
    {
        ["file truncated under its data"] = ("v3", l => l.File.SetLength(300 * 1024)),
        ["file truncated inside an L2 table's cluster"] = ("v3", l => l.File.SetLength(l.L2 + 65536 + 4096)),
        ["L2 entry past the end of the file"] = ("v3", l => l.W64(l.L2Entry(3), Copied | 0x10000000)),
        ["L1 entry past the end of the file"] = ("v3", l => l.W64(l.L1 + 8, Copied | 0x10000000)),
        ["L1 entry with a low reserved bit"] = ("v3", l => l.W64(l.L1, l.U64(l.L1) | 1)),
        ["L1 entry with a high reserved bit"] = ("v3", l => l.W64(l.L1, l.U64(l.L1) | (1UL << 60))),
        ["L2 entry with a low reserved bit"] = ("v3", l => l.W64(l.L2Entry(2), l.U64(l.L2Entry(2)) | 2)),
        ["L2 entry with a high reserved bit"] = ("v3", l => l.W64(l.L2Entry(2), l.U64(l.L2Entry(2)) | (1UL << 57))),
        ["misaligned data cluster"] = ("v3", l => l.W64(l.L2Entry(2), l.U64(l.L2Entry(2)) + 0x200)),
        ["misaligned preallocated zero cluster"] = ("v3", l => l.W64(l.L2Entry(2), (l.U64(l.L2Entry(2)) + 0x200) | 1)),
        ["misaligned L2 table"] = ("v3", l => l.W64(l.L1, l.U64(l.L1) + 0x200)),
        ["compressed cluster with the copied flag"] = ("compressed", l => l.W64(l.L2Entry(0), l.U64(l.L2Entry(0)) | Copied)),
        ["compressed cluster past the end of the file"] = ("compressed", l => l.W64(l.L2Entry(0), (1UL << 62) | 0x1000000)),
        ["refcount table entry with reserved bits"] = ("v3", l => l.W64(l.RefcountTable, l.U64(l.RefcountTable) | 0x100)),
        ["misaligned refcount block"] = ("v3", l => l.W64(l.RefcountTable, l.U64(l.RefcountTable) + 0x200)),
        ["refcount block past the end of the file"] = ("v3", l => l.W64(l.RefcountTable + 8, 0x10000000)),
        ["refcount table on the L1 table"] = ("v3", l => l.W64(48, (ulong)l.L1)),
        ["refcount of a data cluster zeroed"] = ("v3", l => l.W16(l.RefcountBlock + 2 * 6, 0)),
        ["refcount of a data cluster too high"] = ("v3", l => l.W16(l.RefcountBlock + 2 * 6, 2)),
        ["refcount of the header cluster zeroed"] = ("v3", l => l.W16(l.RefcountBlock, 0)),
        ["misaligned refcount block in a dirty image"] = ("v3", l => { l.W64(l.RefcountTable, l.U64(l.RefcountTable) + 0x200); l.W64(72, l.U64(72) | 1); }),
        ["refcount table entry past the image"] = ("v3", l => l.W64(l.RefcountTable + 8, 0x00ffffff00000000)),
        ["refcount table entry in bounds but uncovered"] = ("v3", l => l.W64(l.RefcountTable + 8, 0x0000001000000000)),
        ["data cluster on the refcount block"] = ("v3", l => l.W64(l.L2Entry(20), Copied | (ulong)l.RefcountBlock)),
        ["data cluster on the L1 table"] = ("v3", l => l.W64(l.L2Entry(20), Copied | (ulong)l.L1)),
        ["data cluster on the L2 table"] = ("v3", l => l.W64(l.L2Entry(20), Copied | (ulong)l.L2)),
        ["data cluster on the refcount table"] = ("v3", l => l.W64(l.L2Entry(20), Copied | (ulong)l.RefcountTable)),
        ["data cluster on a snapshot's L1 table"] = ("snapshot", l => l.W64(l.L2Entry(20), Copied | (ulong)l.SnapshotL1)),
        ["data cluster on a snapshot's L2 table"] = ("snapshot", l => l.W64(l.L2Entry(20), Copied | (ulong)l.SnapshotL2)),
        ["copied flag missing on data"] = ("v3", l => l.W64(l.L2Entry(2), l.U64(l.L2Entry(2)) & ~Copied)),
        ["copied flag missing on an L2 table"] = ("v3", l => l.W64(l.L1, l.U64(l.L1) & ~Copied)),
        ["misaligned snapshot table"] = ("snapshot", l => l.W64(64, (ulong)l.Snapshots + 8)),
        ["snapshot table past the end of the file"] = ("snapshot", l => l.W64(64, 0x10000000)),
        ["too many snapshots"] = ("snapshot", l => l.W32(60, 70000)),
        ["snapshot count one too high"] = ("snapshot", l => l.W32(60, 2)),
        ["misaligned snapshot L1 table"] = ("snapshot", l => l.W64(l.Snapshots, l.U64(l.Snapshots) + 0x200)),
        ["snapshot L1 table past the end of the file"] = ("snapshot", l => l.W64(l.Snapshots, 0x10000000)),
        ["snapshot L1 table too large"] = ("snapshot", l => l.W32(l.Snapshots + 8, 0x1000000)),
        ["snapshot L1 table larger than the active one"] = ("snapshot", l => l.W32(l.Snapshots + 8, 4)),
        ["snapshot entry without extra data"] = ("snapshot", l => l.W32(l.Snapshots + 36, 0)),
        ["snapshot entry with too much extra data"] = ("snapshot", l => l.W32(l.Snapshots + 36, 5000)),
        ["zero flag in a v2 image"] = ("v2", l => l.W64(l.L2Entry(2), l.U64(l.L2Entry(2)) | 1)),
        ["plain zero entry in a v2 image"] = ("v2", l => l.W64(l.L2Entry(20), 1)),
    };

    public static TheoryData<string> DamageNames => new(Damages.Keys);

    private static string Damaged(TempDir dir, string name)
    {
        var (kind, mutate) = Damages[name];
        string img = dir.File($"{kind}.qcow2");
        if (File.Exists(img)) File.Delete(img);
        switch (kind)
        {
            case "v3":
            case "v2":
                Qemu.Ok(Qemu.Img("create", "-q", "-f", "qcow2", "-o", kind == "v2" ? "compat=0.10" : "compat=1.1", img, "4M"));
                Qemu.Ok(Qemu.Io("-c", "write -P 0xaa 0 1M", img));
                break;
            case "snapshot":
                Qemu.Ok(Qemu.Img("create", "-q", "-f", "qcow2", img, "4M"));
                Qemu.Ok(Qemu.Io("-c", "write -P 0xaa 0 1M", img));
                Qemu.Ok(Qemu.Img("snapshot", "-c", "s1", img));
                Qemu.Ok(Qemu.Io("-c", "write -P 0xbb 0 64k", img));
                break;
            case "compressed":
                string raw = dir.File("source.raw");
                Qemu.Ok(Qemu.Img("create", "-q", "-f", "raw", raw, "4M"));
                Qemu.Ok(Qemu.Io("-f", "raw", "-c", "write -P 0xaa 0 1M", raw));
                Qemu.Ok(Qemu.Img("convert", "-c", "-f", "raw", "-O", "qcow2", raw, img));
                break;
        }
        using (var f = new FileStream(img, FileMode.Open, FileAccess.ReadWrite)) mutate(new Layout(f));
        return img;
    }

    /// <summary>What a tool printed, with the program name taken out of its own lines.</summary>
    private static string Seen(RunResult r, string program) =>
        $"exit {r.ExitCode}\n--- stdout\n{r.Stdout}--- stderr\n{r.Stderr.Replace(program + ":", "PROGRAM:")}";

    /// <summary>
    /// What a request on a damaged image left: the tool's exit and lines (timing lines dropped, the
    /// program names taken out), whether the image is marked corrupt, and what qemu-img check says.
    /// </summary>
    private static string Outcome(RunResult r, string img, params string[] programs)
    {
        var info = Qemu.Ok(Qemu.Img("info", img)).Stdout;
        var check = Qemu.Img("check", img);
        string stdout = string.Join("\n", r.Stdout.Split('\n').Where(l => !l.Contains(" ops; ", StringComparison.Ordinal)));
        string stderr = programs.Aggregate(r.Stderr, (text, program) => text.Replace(program + ":", "PROGRAM:"));
        return $"exit {r.ExitCode}\n{stdout}\n{stderr}\nimage corrupt: {info.Contains("corrupt: true")}\n" +
            $"check exit {check.ExitCode}\n{check.Stdout}{check.Stderr}";
    }

    [Theory]
    [MemberData(nameof(DamageNames))]
    public void Check_reports_the_damage_as_qemu_img_does(string damage)
    {
        using var dir = new TempDir();
        string img = Damaged(dir, damage);
        string copy = dir.File("copy.qcow2");
        File.Copy(img, copy);
        foreach (var output in new[] { "human", "json" })
        {
            var theirs = Qemu.Img("check", $"--output={output}", img);
            var mine = Qemu.Vdisk("check", $"--output={output}", copy);
            Assert.Equal(Seen(theirs, "qemu-img").Replace(img, "IMG"), Seen(mine, "vdisk").Replace(copy, "IMG"));
        }
    }

    public static TheoryData<string, string> ReadCases => new()
    {
        { "zero flag in a v2 image", "read 128k 4k" },
        { "plain zero entry in a v2 image", "read 1280k 4k" },
        { "misaligned data cluster", "read 128k 4k" },
        { "misaligned L2 table", "read 0 4k" },
        { "file truncated under its data", "read 512k 4k" },
        { "L2 entry past the end of the file", "read 192k 4k" },
        { "compressed cluster past the end of the file", "read 0 4k" },
    };

    [Theory]
    [MemberData(nameof(ReadCases))]
    public void Reads_refuse_what_qemu_io_refuses_and_mark_the_image_as_it_does(string damage, string read)
    {
        using var dir = new TempDir();
        foreach (bool readOnly in new[] { true, false })
        {
            var seen = new List<string>();
            foreach (var (program, tool) in new[] { ("qemu-io", new[] { "qemu-io" }), ("vdisk", new[] { Programs.Vdisk, "io" }) })
            {
                string img = Damaged(dir, damage);
                // A second read after the damaged one: QEMU refuses everything once the corruption was fatal.
                string[] args = [.. tool.Skip(1), .. readOnly ? new[] { "-r" } : [], "-c", read, "-c", "read 0 512", img];
                var r = Programs.Run(tool[0], args);
                var info = Qemu.Ok(Qemu.Img("info", img)).Stdout;
                // "read N/N bytes at offset X" or "read failed: ..." per command; the timing lines differ by nature.
                string stdout = string.Join("\n", r.Stdout.Split('\n').Where(l => l.StartsWith("read ", StringComparison.Ordinal)));
                seen.Add($"{(readOnly ? "-r" : "rw")} exit {r.ExitCode}\n{stdout}\n{r.Stderr.Replace(program + ":", "PROGRAM:")}\nimage corrupt: {info.Contains("corrupt: true")}");
            }
            Assert.Equal(seen[0], seen[1]);
        }
    }

    /// <summary>
    /// qemu-img convert --salvage: unreadable sectors become zeroes and a block status that fails
    /// even for one sector counts as data, each with QEMU's warning; -q keeps the warnings quiet.
    /// Without --salvage the same images fail to convert.
    /// </summary>
    [Theory]
    [InlineData("misaligned data cluster", "--salvage")]
    [InlineData("misaligned L2 table", "--salvage")]
    [InlineData("compressed cluster past the end of the file", "--salvage")]
    [InlineData("compressed cluster past the end of the file", "--salvage -q")]
    [InlineData("misaligned data cluster", "-q")]
    [InlineData("misaligned L2 table", "-C --salvage")]
    public void Convert_salvages_what_qemu_img_salvages(string damage, string options)
    {
        using var dir = new TempDir();
        var seen = new List<string>();
        foreach (var (program, tool) in new[] { ("qemu-img", new[] { "qemu-img" }), ("vdisk", new[] { Programs.Vdisk }) })
        {
            string img = Damaged(dir, damage), target = dir.File(program + ".raw");
            var r = Programs.Run(tool[0], ["convert", .. options.Split(' '), "-O", "raw", img, target]);
            // Block-status and read warnings come from requests in flight at once: their
            // interleaving is the scheduler's, so the lines are compared as a sorted list.
            var sorted = r with { Stderr = string.Concat(r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries).Order(StringComparer.Ordinal).Select(l => l + "\n")) };
            seen.Add(Seen(sorted, program).Replace(target, "TARGET"));
        }
        Assert.Equal(seen[0], seen[1]);
        string theirs = dir.File("qemu-img.raw"), mine = dir.File("vdisk.raw");
        Assert.Equal(File.Exists(theirs), File.Exists(mine));
        if (options.Contains("--salvage") && !options.Contains("-C"))
        {
            Assert.Contains("exit 0", seen[1]);
            Assert.Equal(File.ReadAllBytes(theirs), File.ReadAllBytes(mine));
        }
    }

    [Fact]
    public void A_snapshot_with_an_oversized_L1_table_is_still_listed_as_qemu_img_lists_it()
    {
        using var dir = new TempDir();
        string img = Damaged(dir, "snapshot L1 table too large");
        var theirs = Qemu.Img("info", img);
        var mine = Qemu.Vdisk("info", img);
        Assert.Equal(0, theirs.ExitCode);
        Assert.Contains("s1", theirs.Stdout);
        Assert.Equal(theirs.ToString(), mine.ToString());
    }
    public static TheoryData<string, string> MetadataOverlaps => new()
    {
        { "data cluster on the refcount block", "" },
        { "data cluster on the refcount block", "overlap-check.refcount-block=off" },
        { "data cluster on the refcount block", "overlap-check=constant" },
        { "data cluster on the L1 table", "overlap-check=cached" },
        { "data cluster on the L1 table", "overlap-check=none" },
        { "data cluster on the L2 table", "" },
        { "data cluster on the L2 table", "overlap-check.template=none,overlap-check.active-l2=on" },
        { "data cluster on the refcount table", "" },
        { "data cluster on a snapshot's L1 table", "" },
        { "data cluster on a snapshot's L1 table", "overlap-check.inactive-l1=off" },
        { "data cluster on a snapshot's L2 table", "" },
        { "data cluster on a snapshot's L2 table", "overlap-check=all" },
    };

    /// <summary>
    /// A write into a data cluster whose L2 entry points at metadata is stopped (image marked
    /// corrupt, EIO) exactly where QEMU's overlap checks stop it, as the overlap-check options
    /// select them; where they do not, the write lands on the metadata in both. The image is then
    /// checked the same way. vdisk used to check only the header, L1, refcount and snapshot tables,
    /// and took the options without applying them.
    /// </summary>
    [Theory]
    [MemberData(nameof(MetadataOverlaps))]
    public void Writes_onto_metadata_are_stopped_as_qemu_io_stops_them(string damage, string options)
    {
        using var dir = new TempDir();
        var seen = new List<string>();
        foreach (var (program, tool) in new[] { ("qemu-io", new[] { "qemu-io" }), ("vdisk", new[] { Programs.Vdisk, "io" }) })
        {
            string img = Damaged(dir, damage);
            string open = options.Length > 0 ? $"open -o {options} {img}" : $"open {img}";
            var r = Programs.Run(tool[0], [.. tool.Skip(1), "-c", open, "-c", "write -P 0x2a 1280k 512", "-c", "read -P 0x2a 1280k 512"]);
            seen.Add(Outcome(r, img, program));
        }
        Assert.Equal(seen[0], seen[1]);
    }

    public static TheoryData<string, string, string> DamagedClusterRequests => new()
    {
        // qcow2_free_any_cluster: an unaligned cluster is not freed; the image is reported corrupt, not marked.
        { "misaligned data cluster", "io", "discard 128k 64k" },
        { "misaligned data cluster", "io", "write -z -u 128k 64k" },
        // handle_copied: a cluster written in place must be aligned.
        { "misaligned data cluster", "io", "write -P 0x2a 130k 4k" },
        { "misaligned preallocated zero cluster", "io", "write -P 0x2a 128k 4k" },
        // qcow2_free_clusters meets an unaligned refcount block: the free fails (the node is
        // unusable), so the discard's unaligned tail, a request of its own, fails too.
        { "misaligned refcount block", "io", "discard 0 65537" },
        // qcow2_downgrade expanding zero clusters.
        { "misaligned preallocated zero cluster", "img", "amend -o compat=0.10" },
        { "misaligned L2 table", "img", "amend -o compat=0.10" },
    };

    /// <summary>
    /// Requests meeting damaged clusters fail, or go on, with QEMU's lines (iotest 060's
    /// "non-fatal corruption on freeing", "unaligned pre-allocated zero cluster" and "writing to
    /// an unaligned preallocated zero cluster"); the image is left marked, or not, as QEMU leaves
    /// it. vdisk used to free the cluster the offset fell in, name the read-side check on writes,
    /// and drop "Failed to turn zero into data clusters" from amend's error.
    /// </summary>
    [Theory]
    [MemberData(nameof(DamagedClusterRequests))]
    public void Requests_on_damaged_clusters_report_as_qemu_does(string damage, string tool, string command)
    {
        using var dir = new TempDir();
        var seen = new List<string>();
        foreach (var (program, run) in new[] { ("qemu", new[] { $"qemu-{tool}" }), ("vdisk", tool == "io" ? new[] { Programs.Vdisk, "io" } : [Programs.Vdisk]) })
        {
            string img = Damaged(dir, damage);
            string[] args = tool == "io" ? ["-c", command, img] : [.. command.Split(' '), img];
            var r = Programs.Run(run[0], [.. run.Skip(1), .. args]);
            seen.Add(Outcome(r, img, $"qemu-{tool}", "vdisk"));
        }
        Assert.Equal(seen[0], seen[1]);
    }

    public static TheoryData<string, string, string> RepairRuns => new()
    {
        // The refcount structures are rebuilt: where the new ones go decides the repaired file.
        { "misaligned refcount block", "img", "check -r all" },
        { "refcount block past the end of the file", "img", "check -r all" },
        { "refcount table on the L1 table", "img", "check -r all" },
        { "refcount of a data cluster zeroed", "img", "check -r all" },
        // A dirty image is repaired when opened read-write, printing what the repair finds.
        { "misaligned refcount block in a dirty image", "io", "close" },
        // Shrinking drops unused refcount blocks; one whose own cluster nothing covers stops it.
        { "refcount table entry past the image", "img", "resize --shrink 2M" },
        { "refcount table entry in bounds but uncovered", "img", "resize --shrink 2M" },
    };

    /// <summary>
    /// Repairs and shrinks that rebuild or drop refcount structures leave the file qemu-img
    /// leaves: same lines, same exit, same size, same check afterwards. vdisk used to put rebuilt
    /// structures after everything in use (QEMU fills the first free clusters), repaired a dirty
    /// image silently, and kept every refcount block when shrinking.
    /// </summary>
    [Theory]
    [MemberData(nameof(RepairRuns))]
    public void Repairs_and_shrinks_leave_the_file_qemu_leaves(string damage, string tool, string command)
    {
        using var dir = new TempDir();
        var seen = new List<string>();
        foreach (var (program, run) in new[] { ("qemu", new[] { $"qemu-{tool}" }), ("vdisk", tool == "io" ? new[] { Programs.Vdisk, "io" } : [Programs.Vdisk]) })
        {
            string img = Damaged(dir, damage);
            string[] args = tool == "io" ? ["-c", command, img] : [.. command.Split(' ')[..^1], img, .. command.Split(' ')[^1..]];
            if (command.StartsWith("check", StringComparison.Ordinal)) args = [.. command.Split(' '), img];
            var r = Programs.Run(run[0], [.. run.Skip(1), .. args]);
            var info = Qemu.Ok(Qemu.Img("info", img)).Stdout;
            var check = Qemu.Img("check", img);
            string stderr = r.Stderr.Replace($"qemu-{tool}:", "PROGRAM:").Replace("vdisk:", "PROGRAM:");
            string size = info.Split('\n').First(l => l.StartsWith("virtual size", StringComparison.Ordinal));
            seen.Add($"exit {r.ExitCode}\n{r.Stdout}\n{stderr}\n{size}\nfile length {new FileInfo(img).Length}\n" +
                $"check exit {check.ExitCode}\n{check.Stdout}{check.Stderr}");
        }
        Assert.Equal(seen[0], seen[1]);
    }

    /// <summary>
    /// With the header cluster's refcount zeroed (iotest 060's "unallocated image header"), cluster
    /// 0 is the first free cluster: QEMU hands it out and then refuses it, each allocation with
    /// its own line (a data write meets the header overlap check, a compressed write is stopped
    /// before its allocation), and marks the image corrupt. vdisk used to skip cluster 0 and write
    /// elsewhere, leaving a corrupt image looking healthy.
    /// </summary>
    [Theory]
    [InlineData("write -P 0x2a 1280k 512")]
    [InlineData("write -c -P 0x2a 1280k 64k")]
    [InlineData("write -z 1280k 64k")]
    public void Allocations_at_cluster_zero_are_refused_as_qemu_io_refuses_them(string write)
    {
        using var dir = new TempDir();
        var seen = new List<string>();
        foreach (var (program, tool) in new[] { ("qemu-io", new[] { "qemu-io" }), ("vdisk", new[] { Programs.Vdisk, "io" }) })
        {
            string img = Damaged(dir, "refcount of the header cluster zeroed");
            var r = Programs.Run(tool[0], [.. tool.Skip(1), "-c", write, "-c", "read -P 0xaa 0 64k", img]);
            seen.Add(Outcome(r, img, program));
        }
        Assert.Equal(seen[0], seen[1]);
    }

    /// <summary>
    /// iotest 305: an allocating write that meets an unaligned refcount block offset marks the
    /// image corrupt with qemu-io's line and fails with EIO, as QEMU's qcow2_get_refcount does.
    /// </summary>
    [Fact]
    public void An_allocating_write_over_an_unaligned_refcount_block_marks_the_image_corrupt_as_qemu_io()
    {
        using var dir = new TempDir();
        var seen = new List<string>();
        foreach (var (program, tool) in new[] { ("qemu-io", new[] { "qemu-io" }), ("vdisk", new[] { Programs.Vdisk, "io" }) })
        {
            string img = dir.File($"{program}.qcow2");
            Qemu.Ok(Qemu.Img("create", "-q", "-f", "qcow2", "-o", "refcount_bits=64,cluster_size=1k", img, "1M"));
            Qemu.Ok(Qemu.Io("-c", "write 0 124k", "-c", "discard 121k 1k", "-c", "discard 123k 1k", img));
            using (var f = new FileStream(img, FileMode.Open, FileAccess.ReadWrite))
            {
                var field = new byte[8];
                f.Position = 48;
                f.ReadExactly(field);
                f.Position = (long)System.Buffers.Binary.BinaryPrimitives.ReadUInt64BigEndian(field) + 14;
                f.WriteByte(0x06);
            }
            var r = Programs.Run(tool[0], [.. tool.Skip(1), "-c", "write 121k 3k", img]);
            var info = Qemu.Ok(Qemu.Img("info", img)).Stdout;
            seen.Add($"exit {r.ExitCode}\n{r.Stdout}\n{r.Stderr.Replace(program + ":", "PROGRAM:")}\nimage corrupt: {info.Contains("corrupt: true")}");
        }
        Assert.Contains("Marking image as corrupt: Refblock offset", seen[0]);
        Assert.Equal(seen[0], seen[1]);
    }
}
