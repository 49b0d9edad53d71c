namespace Vdisk.Locking;

/// <summary>The file driver's <c>locking=</c> option.</summary>
public enum LockingMode
{
    /// <summary>OFD locks where the kernel has them, otherwise none (QEMU's default).</summary>
    Auto,
    /// <summary>OFD locks, or POSIX locks with QEMU's warning where OFD is missing.</summary>
    On,
    /// <summary>No lock syscalls at all.</summary>
    Off,
    /// <summary>POSIX locks without probing for OFD (proposed upstream for filesystems whose OFD locks misbehave).</summary>
    Posix,
}

/// <summary>Which lock syscalls a file node ends up using.</summary>
public enum LockKind
{
    /// <summary>No locks.</summary>
    None,
    /// <summary>Open-file-description locks (F_OFD_SETLK).</summary>
    Ofd,
    /// <summary>Process-wide POSIX locks (F_SETLK), guarded so closing a descriptor never drops them.</summary>
    Posix,
}

/// <summary>Parsing and resolution of <see cref="LockingMode"/>.</summary>
public static class LockingModes
{
    /// <summary>QEMU's warning when <c>locking=on</c> meets a kernel without OFD locks.</summary>
    public const string PosixFallbackWarning =
        "File lock requested but OFD locking syscall is unavailable, falling back to POSIX file locks";

    /// <summary>The second line QEMU prints after <see cref="PosixFallbackWarning"/>.</summary>
    public const string PosixFallbackWarningDetail = "Due to the implementation, locks can be lost unexpectedly.";

    /// <summary>Parses on/off/auto (and vdisk's posix); null when invalid.</summary>
    public static LockingMode? Parse(string value) => value switch
    {
        "auto" => LockingMode.Auto,
        "on" => LockingMode.On,
        "off" => LockingMode.Off,
        "posix" => LockingMode.Posix,
        _ => null,
    };

    /// <summary>The option value that <see cref="Parse"/> reads back as <paramref name="mode"/>.</summary>
    public static string Format(LockingMode mode) => mode switch
    {
        LockingMode.On => "on",
        LockingMode.Off => "off",
        LockingMode.Posix => "posix",
        _ => "auto",
    };

    /// <summary>
    /// Decides the lock kind like QEMU's raw_open_common: the OFD probe runs once per process.
    /// <paramref name="warn"/> receives the fallback warning lines.
    /// </summary>
    public static LockKind Resolve(LockingMode mode, Action<string>? warn) => mode switch
    {
        LockingMode.Off => LockKind.None,
        LockingMode.Posix => LockKind.Posix,
        LockingMode.Auto => OfdProbe.Available ? LockKind.Ofd : LockKind.None,
        LockingMode.On when OfdProbe.Available => LockKind.Ofd,
        _ => WarnFallback(warn),
    };

    private static LockKind WarnFallback(Action<string>? warn)
    {
        warn?.Invoke(PosixFallbackWarning);
        warn?.Invoke("\n" + PosixFallbackWarningDetail);
        return LockKind.Posix;
    }
}
