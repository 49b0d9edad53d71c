using Vdisk.Graph;
using Vdisk.Locking;
using Vdisk.Native;
using Vdisk.Options;
using Vdisk.Permissions;

namespace Vdisk.Drivers.File;

/// <summary>
/// file-posix's create step (raw_co_create), which every format's create starts with when its
/// target is a file: the file is created, locked as an opener that writes and resizes (so
/// creating over an image in use fails and leaves it untouched), emptied, optionally grown and
/// allocated, and unlocked with an unlock of every lock byte.
/// </summary>
public static class FileCreate
{
    /// <summary>The file protocol's create options (file_create_opts), appended to a format's.</summary>
    public static readonly IReadOnlyList<QemuOptDesc> OptionList =
    [
        new("size", QemuOptType.Size, "Virtual disk size"),
        new("nocow", QemuOptType.Bool, "Turn off copy-on-write (valid only on btrfs)"),
        new("preallocation", QemuOptType.String, "Preallocation mode (allowed values: off, falloc, full)"),
        new("extent_size_hint", QemuOptType.Size, "Extent size hint for the image file, 0 to disable"),
    ];

    /// <summary>
    /// Creates <paramref name="path"/> empty under the create-time lock; <paramref name="fill"/>,
    /// when given, runs while the lock is held (raw's size and preallocation).
    /// </summary>
    /// <exception cref="NativeIOException">The file cannot be created, locked or emptied (the lock conflict as any open words it).</exception>
    public static async Task CreateAsync(string path, LockingMode locking, Func<FileNode, CancellationToken, Task>? fill, CancellationToken ct)
    {
        var file = FileNode.Open(BlockGraph.GenerateName(), path, NodeFlags.ReadWrite, locking, create: true);
        try
        {
            file.LockForCreate();
            file.Truncate(0);
            if (fill is not null) await fill(file, ct).ConfigureAwait(false);
            file.UnlockAfterCreate();
        }
        finally
        {
            await file.CloseAsync().ConfigureAwait(false);
        }
    }

    /// <summary>raw_co_create's growth of the emptied file to <paramref name="size"/> with the preallocation mode.</summary>
    public static async Task GrowAsync(FileNode file, long size, Preallocation preallocation, CancellationToken ct)
    {
        await file.TruncateAsync(size, preallocation, ct).ConfigureAwait(false);
        await file.FlushAsync(ct).ConfigureAwait(false);
    }

    /// <summary>The options that open the created file as a protocol node with the same locking mode.</summary>
    public static OptionDict OpenOptions(string path, LockingMode locking)
    {
        var options = new OptionDict();
        options.Set("driver", "file");
        options.Set("filename", path);
        options.Set("locking", LockingModes.Format(locking));
        return options;
    }
}
