using CsCheck;
using Vdisk.Drivers.Bochs;
using Vdisk.Drivers.File;
using Vdisk.Locking;
using Vdisk.Native;
using Vdisk.Permissions;
using Vdisk.TestSupport;
using Xunit;

namespace Vdisk.Tests.Drivers;

/// <summary>
/// The bochs node reads what the catalog and the sector bitmaps say: placed extents in any order,
/// written and unwritten sectors mixed, unwritten extents, a disk ending inside an extent; and its
/// header checks refuse what bochs_open refuses, with its messages.
/// </summary>
public sealed class BochsNodeTests
{
    /// <summary>Opens <paramref name="image"/> from a file of its own (CsCheck runs samples in parallel).</summary>
    private static async Task<T> WithNodeAsync<T>(byte[] image, Func<BochsNode, Task<T>> use)
    {
        string path = Path.Combine(Path.GetTempPath(), $"vdisk-bochs-{Guid.NewGuid():N}.bochs");
        await File.WriteAllBytesAsync(path, image);
        var file = FileNode.Open("file0", path, NodeFlags.None, LockingMode.Off);
        try
        {
            var node = await BochsNode.OpenAsync("bochs0", NodeFlags.None, file);
            return await use(node);
        }
        finally
        {
            await file.CloseAsync();
            File.Delete(path);
        }
    }

    private static readonly Gen<(BochsImage Image, (int Offset, int Length)[] Reads)> GenImageAndReads =
        from extentLog in Gen.Int[9, 13]
        from extents in Gen.Int[1, 8]
        from tailSectors in Gen.Int[0, (1 << (extentLog - 9)) - 1]
        from version in Gen.Bool.Select(v1 => v1 ? 0x00010000u : 0x00020000u)
        from order in Gen.Int[0, extents - 1].Array[0, extents]
        from written in Gen.Bool.Array[extents * (1 << (extentLog - 9))]
        let extentSize = 1u << extentLog
        let disk = (ulong)extents * extentSize - (ulong)tailSectors * 512
        from reads in Gen.Int[0, (int)disk - 1].SelectMany(o => Gen.Int[1, (int)disk - o].Select(l => (o, l))).Array[1, 6]
        select (new BochsImage
        {
            Version = version,
            ExtentSize = extentSize,
            DiskSize = disk,
            CatalogEntries = (uint)extents,
            Slots = order.Distinct().ToArray(),
            Written = (e, s) => written[e * (1 << (extentLog - 9)) + s],
        }, reads);

    [Fact]
    public void Reads_return_written_sectors_and_zeroes_elsewhere()
    {
        GenImageAndReads.Sample(sample =>
        {
            var (image, reads) = sample;
            var (file, guest) = image.Build();
            WithNodeAsync(file, async node =>
            {
                Assert.Equal(guest.Length, node.Length);
                var whole = new byte[guest.Length];
                await node.ReadAsync(0, whole);
                Assert.Equal(guest, whole);
                foreach (var (offset, length) in reads)
                {
                    var buffer = new byte[length];
                    await node.ReadAsync(offset, buffer);
                    Assert.Equal(guest.AsSpan(offset, length).ToArray(), buffer);
                }
                return 0;
            }).GetAwaiter().GetResult();
        });
    }

    public static TheoryData<string, int, byte[], int, string> Refusals => new()
    {
        { "not bochs", 0, "Bochs Virtual HD Imagf"u8.ToArray(), Errno.EINVAL, "Image not in Bochs format" },
        { "type not Redolog", 32, "Redolog!"u8.ToArray(), Errno.EINVAL, "Image not in Bochs format" },
        { "version 3", 0x40, [0, 0, 3, 0], Errno.EINVAL, "Image not in Bochs format" },
        { "catalog too large", 0x48, [1, 0, 0x10, 0], Errno.EFBIG, "Catalog size is too large" },
        { "extent 256", 0x50, [0, 1, 0, 0], Errno.EINVAL, "Extent size must be at least 512" },
        { "extent 3072", 0x50, [0, 0x0c, 0, 0], Errno.EINVAL, "Extent size 3072 is not a power of two" },
        { "extent 16M", 0x50, [0, 0, 0, 1], Errno.EINVAL, "Extent size 16777216 is too large" },
        { "disk beyond the catalog", 0x58, [0, 0, 1, 0], Errno.EINVAL, "Catalog size is too small for this disk size" },
    };

    [Theory]
    [MemberData(nameof(Refusals))]
    public async Task Damaged_headers_are_refused_as_bochs_open_refuses_them(string damage, int at, byte[] bytes, int errno, string message)
    {
        var (file, _) = new BochsImage { DiskSize = 4 * 4096, CatalogEntries = 4, Slots = [1] }.Build();
        bytes.CopyTo(file, at);
        var e = await Assert.ThrowsAsync<NativeIOException>(() => WithNodeAsync(file, _ => Task.FromResult(0)));
        Assert.True(e.Errno == errno && e.Message == message, $"{damage}: errno {e.Errno}, \"{e.Message}\"");
    }

    [Fact]
    public void Probe_knows_bochs_by_its_strings_and_version()
    {
        var (file, _) = new BochsImage { DiskSize = 4096, CatalogEntries = 1 }.Build();
        Assert.Equal("bochs", Vdisk.Graph.GraphOpener.ProbedFormat(file.AsSpan(0, 512)));
        file[0x40 + 2] = 3;
        Assert.Null(Vdisk.Graph.GraphOpener.ProbedFormat(file.AsSpan(0, 512)));
    }
}
