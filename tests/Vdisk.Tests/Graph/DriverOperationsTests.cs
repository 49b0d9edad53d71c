using Vdisk.Graph;
using Vdisk.Native;
using Vdisk.Permissions;
using Xunit;

namespace Vdisk.Tests.Graph;

/// <summary>
/// The format-specific operations reach a driver only through <see cref="DiskImage"/>: the
/// permission gate comes first, and a format without the operation refuses it with QEMU's words.
/// </summary>
public sealed class DriverOperationsTests : IDisposable
{
    private const int Cluster = 64 * 1024;
    private readonly ScratchImages _images = new("vdisk-driverops-");

    public void Dispose() => _images.Dispose();

    private Task<string> CreateAsync(string format) => _images.CreateAsync("disk." + format, format, "1M");

    private static byte[] Pattern(int length) => Enumerable.Repeat((byte)0xab, length).ToArray();

    [Fact]
    public async Task CompressedWriteWithoutWritePermissionIsRefusedByTheGate()
    {
        string path = await CreateAsync("qcow2");
        // The node is opened read-write, but this user does not take WRITE: only the gate can refuse.
        var readOnlyUser = new PermissionPair(BlockPermission.ConsistentRead, BlockPermission.All);
        await using (var image = DiskImage.Open(ImageSource.FromFile(path, "qcow2"), OpenFlags.ReadWrite, readOnlyUser))
        {
            var e = await Assert.ThrowsAsync<NativeIOException>(async () => await image.WriteCompressedAsync(0, Pattern(Cluster)));
            Assert.Equal(Errno.EPERM, e.Errno);
        }
        await using var check = DiskImage.Open(ImageSource.FromFile(path, "qcow2"), OpenFlags.None);
        var back = new byte[Cluster];
        await check.ReadAsync(0, back);
        Assert.All(back, b => Assert.Equal(0, b));
    }

    [Fact]
    public async Task CompressedWriteWithWritePermissionReadsBack()
    {
        string path = await CreateAsync("qcow2");
        await using var image = DiskImage.Open(ImageSource.FromFile(path, "qcow2"), OpenFlags.ReadWrite);
        Assert.True(image.SupportsCompressedWrites);
        await image.WriteCompressedAsync(0, Pattern(2 * Cluster));
        var back = new byte[2 * Cluster];
        await image.ReadAsync(0, back);
        Assert.Equal(Pattern(2 * Cluster), back);
        var e = await Assert.ThrowsAsync<NativeIOException>(async () => await image.WriteCompressedAsync(512, Pattern(Cluster)));
        Assert.Equal(Errno.EINVAL, e.Errno);
    }

    [Fact]
    public async Task RawRefusesWhatOnlyQcow2DoesWithQemusWords()
    {
        string path = await CreateAsync("raw");
        await using var image = DiskImage.Open(ImageSource.FromFile(path, "raw"), OpenFlags.ReadWrite | OpenFlags.Resize);
        Assert.False(image.SupportsCompressedWrites);
        Assert.False(image.Root.CanChangeBackingFile);
        Assert.Null(image.Root.FullBackingFilename);

        var compressed = await Assert.ThrowsAsync<NativeIOException>(async () => await image.WriteCompressedAsync(0, Pattern(Cluster)));
        Assert.Equal(Errno.ENOTSUP, compressed.Errno);
        var check = await Assert.ThrowsAsync<NativeIOException>(() => image.CheckAsync(RepairMode.None, null));
        Assert.Equal("This image format does not support checks", check.Message);
        var amend = await Assert.ThrowsAsync<NativeIOException>(async () => await image.AmendAsync(new Vdisk.Options.QemuOpts([]), force: false));
        Assert.Equal("Block driver 'raw' does not support option amendment", amend.Message);
        var empty = await Assert.ThrowsAsync<NativeIOException>(async () => await image.MakeEmptyAsync());
        Assert.Equal("raw does not support emptying nodes", empty.Message);
        var prealloc = await Assert.ThrowsAsync<NativeIOException>(async () => await image.TruncateAsync(2 << 20, Preallocation.Metadata));
        Assert.Equal("Unsupported preallocation mode: metadata", prealloc.Message);
        Assert.Null(BlockDrivers.Find("raw")!.CreateAmendOptions());
        Assert.NotNull(BlockDrivers.Find("qcow2")!.CreateAmendOptions());
        var measure = await Assert.ThrowsAsync<NativeIOException>(() => BlockDrivers.Find("file")!.MeasureAsync(new Vdisk.Options.QemuOpts([]), null));
        Assert.Equal("Block driver 'file' does not support size measurement", measure.Message);
    }

    [Fact]
    public void EveryDriverIsFoundByItsName_AndOnlyOnce()
    {
        // qemu-img's "Supported formats:" list, in strcmp order.
        Assert.Equal(["blkdebug", "blkverify", "bochs", "copy-on-read", "file", "host_cdrom", "host_device", "luks", "nbd", "null-aio",
            "null-co", "qcow2", "quorum", "raw", "throttle", "vdi", "vhdx", "vmdk", "vpc"], BlockDrivers.Names);
        foreach (string name in BlockDrivers.Names)
        {
            var driver = BlockDrivers.Find(name);
            Assert.NotNull(driver);
            Assert.Equal(name, driver.Name);
            Assert.Same(driver, BlockDrivers.Find(name));
            Assert.True(BlockDrivers.Exists(name));
        }
        Assert.Null(BlockDrivers.Find("qcow"));
        Assert.False(BlockDrivers.Exists("qcow"));
        // vdisk serve's BlockdevDriver enum names drivers that exist.
        Assert.All(Vdisk.Server.Qmp.QmpSchema.BlockdevDrivers, name => Assert.True(BlockDrivers.Exists(name), name));
        Assert.Equal("nbd", BlockDrivers.FindProtocol("nbd+unix:///e?socket=/tmp/s").Name);
        Assert.Equal("blkdebug", BlockDrivers.FindProtocol("blkdebug::/tmp/x").Name);
        Assert.Equal("null-aio", BlockDrivers.FindProtocol("null-aio://").Name);
        Assert.Equal("file", BlockDrivers.FindProtocol("file:/tmp/x").Name);
        Assert.Equal("Unknown protocol 'gopher'", Assert.Throws<Vdisk.Options.OptionException>(() => BlockDrivers.FindProtocol("gopher://x")).Message);
    }

    [Fact]
    public void NoToolNamesADriverType()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "VdiskSuite.slnx"))) dir = dir.Parent;
        Assert.NotNull(dir);
        var cli = Path.Combine(dir.FullName, "src", "Vdisk.Cli");
        var pattern = new System.Text.RegularExpressions.Regex(@"\b(Qcow2[A-Z]\w*|(Vmdk|Vpc|Vhdx|Vdi|Bochs)[A-Z]\w*|RawNode|RawDriver|FileNode|FileDriver|NbdNode|NbdDriver|Drivers\.(Qcow2|Raw|File|Vmdk|Vpc|Vhdx|Vdi|Bochs|Nbd))\b");
        var offenders = Directory.EnumerateFiles(cli, "*.cs", SearchOption.AllDirectories)
            .Where(f => !f.Contains("/obj/") && !f.Contains("/bin/"))
            .SelectMany(f => File.ReadLines(f).Select((line, i) => (f, i, line)))
            .Where(x => pattern.IsMatch(x.line))
            .Select(x => $"{Path.GetRelativePath(cli, x.f)}:{x.i + 1}: {x.line.Trim()}")
            .ToList();
        Assert.Empty(offenders);
    }
}
