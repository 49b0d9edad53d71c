namespace Vdisk.Tests;

/// <summary>
/// A temporary directory of images made by <see cref="ImageCreator"/> (as qemu-img create
/// makes them), deleted with everything in it on disposal.
/// </summary>
internal sealed class ScratchImages : IDisposable
{
    private readonly DirectoryInfo _dir;

    public ScratchImages(string prefix) => _dir = Directory.CreateTempSubdirectory(prefix);

    /// <summary>Creates <paramref name="name"/> in <paramref name="format"/> with its create options; returns its path.</summary>
    public async Task<string> CreateAsync(string name, string format, string size, params (string Name, string Value)[] options)
    {
        string path = Path.Combine(_dir.FullName, name);
        var create = new CreateOptions(path, format);
        create.Options.Set("size", size);
        foreach (var (option, value) in options) create.Options.Set(option, value);
        await ImageCreator.CreateAsync(create);
        return path;
    }

    public void Dispose() => _dir.Delete(recursive: true);
}
