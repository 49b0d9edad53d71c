using Vdisk.Permissions;
using Xunit;

namespace Vdisk.Tests.Graph;

/// <summary>
/// Which graphs can write on a read: vdisk io arms its clean end on SIGTERM for them at open,
/// since a kill during or after such a read could lose what it copied.
/// </summary>
public sealed class ReadsMayWriteTests : IDisposable
{
    private readonly ScratchImages _images = new("vdisk-readswrite-");

    public void Dispose() => _images.Dispose();

    private Task<string> CreateAsync(string name, string format) => _images.CreateAsync(name, format, "1M");

    private async Task<string> QuorumOptionsAsync(string rewrite)
    {
        var parts = new List<string> { "driver=quorum", "vote-threshold=2", $"rewrite-corrupted={rewrite}" };
        for (int i = 0; i < 3; i++)
            parts.Add($"children.{i}.driver=raw,children.{i}.file.driver=file,children.{i}.file.filename={await CreateAsync($"q{i}.raw", "raw")}");
        return string.Join(',', parts);
    }

    [Theory]
    [InlineData("qcow2", false)]
    [InlineData("copy-on-read filter", true)]
    [InlineData("quorum rewrite-corrupted=on", true)]
    [InlineData("quorum rewrite-corrupted=off", false)]
    public async Task AGraphWritesOnReadOnlyWhenItCopiesOrRewrites(string graph, bool expected)
    {
        string qcow2 = await CreateAsync("disk.qcow2", "qcow2");
        string options = graph switch
        {
            "qcow2" => $"driver=qcow2,file.driver=file,file.filename={qcow2}",
            "copy-on-read filter" => $"driver=copy-on-read,file.driver=qcow2,file.file.driver=file,file.file.filename={qcow2}",
            "quorum rewrite-corrupted=on" => await QuorumOptionsAsync("on"),
            _ => await QuorumOptionsAsync("off"),
        };
        await using var image = DiskImage.Open(ImageSource.FromImageOptions(options), OpenFlags.ReadWrite);
        Assert.Equal(expected, image.ReadsMayWrite);
        Assert.True(image.HasWrittenNothing);
    }

    [Fact]
    public async Task CopyOnReadOpenFlagWritesOnRead()
    {
        string qcow2 = await CreateAsync("disk.qcow2", "qcow2");
        await using var image = DiskImage.Open(ImageSource.FromFile(qcow2, "qcow2"), OpenFlags.ReadWrite | OpenFlags.CopyOnRead);
        Assert.True(image.ReadsMayWrite);
    }
}
