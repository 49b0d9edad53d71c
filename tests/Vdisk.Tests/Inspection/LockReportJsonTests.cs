using System.Text.Json;
using Vdisk.Inspection;
using Xunit;

namespace Vdisk.Tests.Inspection;

public class LockReportJsonTests
{
    private static JsonElement Report()
    {
        var vm = Fabricate.Qemu(4242, "qemu-system-x86_64", "100-101", "201");
        var unknown = new LockHolder(LockHolderKind.Unknown, null, null, [Fabricate.Lock(KernelLockKind.Ofd, -1, "203-EOF")], unknownReason: "not visible");
        var images = new List<ImageLocks>
        {
            new("disk.img", Fabricate.File, [vm, unknown], uninspectableProcesses: 1),
            new("free.img", Fabricate.File with { Inode = 7 }, []),
            ImageLocks.Failed("gone.img", "No such file or directory", 2),
        };
        return JsonDocument.Parse(LockReportJson.ToJson(images, [AccessMode.Write, AccessMode.Read], "raw")).RootElement;
    }

    [Fact]
    public void Top_level_has_format_and_images()
    {
        var root = Report();
        Assert.Equal(["format", "modes", "images"], root.EnumerateObject().Select(p => p.Name));
        Assert.Equal("raw", root.GetProperty("format").GetString());
        var write = root.GetProperty("modes")[0];
        Assert.Equal(["mode", "tool", "perm", "shared"], write.EnumerateObject().Select(p => p.Name));
        Assert.Equal(("write", "qemu-io"), (write.GetProperty("mode").GetString(), write.GetProperty("tool").GetString()));
        Assert.Equal(["consistent-read", "write"], write.GetProperty("perm").EnumerateArray().Select(e => e.GetString()));
        Assert.Equal(4, write.GetProperty("shared").GetArrayLength());
        Assert.Equal("read", root.GetProperty("modes")[1].GetProperty("mode").GetString());
        Assert.Equal(["disk.img", "free.img", "gone.img"], root.GetProperty("images").EnumerateArray().Select(i => i.GetProperty("path").GetString()));
    }

    [Fact]
    public void Image_lists_holders_and_verdicts()
    {
        var image = Report().GetProperty("images")[0];
        Assert.Equal(["path", "error", "format", "device", "inode", "unreadable-processes", "holders", "verdicts"], image.EnumerateObject().Select(p => p.Name));
        Assert.Equal(JsonValueKind.Null, image.GetProperty("error").ValueKind);
        Assert.Equal("fe:00", image.GetProperty("device").GetString());
        Assert.Equal(4242, image.GetProperty("inode").GetInt64());
        Assert.Equal(1, image.GetProperty("unreadable-processes").GetInt32());

        var vm = image.GetProperty("holders")[0];
        Assert.Equal(["kind", "pid", "fd", "command", "command-line", "shared-with", "locks", "holds", "refuses", "other-locks", "unknown-reason"],
            vm.EnumerateObject().Select(p => p.Name));
        Assert.Equal("ofd", vm.GetProperty("kind").GetString());
        Assert.Equal(4242, vm.GetProperty("pid").GetInt32());
        Assert.Equal(3, vm.GetProperty("fd").GetInt32());
        Assert.Equal("qemu-system-x86_64", vm.GetProperty("command").GetString());
        Assert.Equal(["consistent-read", "write"], vm.GetProperty("holds").EnumerateArray().Select(e => e.GetString()));
        Assert.Equal(["write"], vm.GetProperty("refuses").EnumerateArray().Select(e => e.GetString()));
        var firstLock = vm.GetProperty("locks")[0];
        Assert.Equal(("ofd", "read", 100, 101), (firstLock.GetProperty("type").GetString(), firstLock.GetProperty("mode").GetString(),
            firstLock.GetProperty("start").GetInt32(), firstLock.GetProperty("end").GetInt32()));

        var unknown = image.GetProperty("holders")[1];
        Assert.Equal("unknown", unknown.GetProperty("kind").GetString());
        Assert.Equal(JsonValueKind.Null, unknown.GetProperty("pid").ValueKind);
        Assert.Equal(JsonValueKind.Null, unknown.GetProperty("locks")[0].GetProperty("end").ValueKind);
        Assert.Equal("not visible", unknown.GetProperty("unknown-reason").GetString());
        Assert.True(unknown.GetProperty("other-locks").GetBoolean());
    }

    [Fact]
    public void Verdict_names_error_byte_and_blockers()
    {
        var verdicts = Report().GetProperty("images")[0].GetProperty("verdicts");
        Assert.Equal(2, verdicts.GetArrayLength());
        var write = verdicts[0];
        Assert.Equal(["mode", "admitted", "error", "byte", "blockers", "reason"], write.EnumerateObject().Select(p => p.Name));
        Assert.Equal("write", write.GetProperty("mode").GetString());
        Assert.False(write.GetProperty("admitted").GetBoolean());
        Assert.Equal("Failed to get \"write\" lock", write.GetProperty("error").GetString());
        Assert.Equal(201, write.GetProperty("byte").GetInt32());
        var blocker = Assert.Single(write.GetProperty("blockers").EnumerateArray());
        Assert.Equal((0, 4242), (blocker.GetProperty("holder").GetInt32(), blocker.GetProperty("pid").GetInt32()));
        Assert.Contains("PID 4242", write.GetProperty("reason").GetString());

        var read = verdicts[1];
        Assert.True(read.GetProperty("admitted").GetBoolean());
        Assert.Equal(JsonValueKind.Null, read.GetProperty("error").ValueKind);
        Assert.Equal(JsonValueKind.Null, read.GetProperty("byte").ValueKind);
        Assert.Empty(read.GetProperty("blockers").EnumerateArray());
        Assert.Equal(JsonValueKind.Null, read.GetProperty("reason").ValueKind);
    }

    [Fact]
    public void Image_without_locks_and_failed_image()
    {
        var images = Report().GetProperty("images");
        var free = images[1];
        Assert.Empty(free.GetProperty("holders").EnumerateArray());
        Assert.All(free.GetProperty("verdicts").EnumerateArray(), v => Assert.True(v.GetProperty("admitted").GetBoolean()));
        var gone = images[2];
        Assert.Equal(["path", "error"], gone.EnumerateObject().Select(p => p.Name));
        Assert.Equal("No such file or directory", gone.GetProperty("error").GetString());
    }

    [Fact]
    public void Quotes_are_escaped_readably()
    {
        var text = LockReportJson.ToJson([new ImageLocks("a.img", Fabricate.File, [Fabricate.Qemu(1, "q", "201")])], [AccessMode.Write], "raw");
        Assert.Contains("\"error\": \"Failed to get \\\"write\\\" lock\"", text);
    }
}
