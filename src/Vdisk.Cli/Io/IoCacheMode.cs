namespace Vdisk.Cli.Io;

/// <summary>
/// qemu-io's cache modes (<c>-t MODE</c>, <c>-n</c>; bdrv_parse_cache_mode). qemu-io opens
/// images write-through unless told otherwise: every write is also flushed to the disk.
/// </summary>
internal readonly record struct IoCacheMode(bool WriteThrough, bool Direct, bool NoFlush)
{
    /// <summary>qemu-io's default: write-through, through the host page cache.</summary>
    public static IoCacheMode Default => new(WriteThrough: true, Direct: false, NoFlush: false);

    /// <summary>The mode a <c>-t</c> value names, or null (qemu-io: "Invalid cache option").</summary>
    public static IoCacheMode? Parse(string mode) => mode switch
    {
        "off" or "none" => new(WriteThrough: false, Direct: true, NoFlush: false),
        "directsync" => new(WriteThrough: true, Direct: true, NoFlush: false),
        "writeback" => new(WriteThrough: false, Direct: false, NoFlush: false),
        "unsafe" => new(WriteThrough: false, Direct: false, NoFlush: true),
        "writethrough" => new(WriteThrough: true, Direct: false, NoFlush: false),
        _ => null,
    };

    /// <summary><c>-n</c>: bypass the host cache, write-back.</summary>
    public IoCacheMode WithNoCache() => this with { WriteThrough = false, Direct = true };

    /// <summary>bdrv_parse_discard_flags: whether a <c>-d</c> value is one qemu-io accepts.</summary>
    public static bool IsDiscardMode(string mode) => mode is "off" or "ignore" or "on" or "unmap";
}
