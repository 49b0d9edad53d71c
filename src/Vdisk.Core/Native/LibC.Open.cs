using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Vdisk.Native;

internal static partial class LibC
{
    public const int O_RDONLY = 0x0;
    public const int O_RDWR = 0x2;
    public const int O_CREAT = 0x40;
    public const int O_NONBLOCK = 0x800;
    public const int O_CLOEXEC = 0x80000;

    /// <summary>O_DIRECT differs by architecture (asm-generic 0x4000, arm64 0x10000).</summary>
    public static int O_DIRECT => RuntimeInformation.ProcessArchitecture == Architecture.Arm64 ? 0x10000 : 0x4000;

    /// <summary>
    /// open(2). The descriptor comes back owned by a <see cref="SafeFileHandle"/>, invalid (and
    /// errno in <see cref="LastError"/>) on failure. Never FileStream or File.OpenHandle: they
    /// add a whole-file flock.
    /// </summary>
    [LibraryImport(Lib, EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial SafeFileHandle Open(string path, int flags, UnixFileMode mode);
}
