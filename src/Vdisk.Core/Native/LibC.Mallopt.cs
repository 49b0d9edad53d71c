using System.Runtime.InteropServices;

namespace Vdisk.Native;

// The daemon's threads share glibc's main malloc arena (ProcessLimits.ShareOneMallocArena).
internal static partial class LibC
{
    /// <summary>mallopt(3); returns 1 on success, 0 on error.</summary>
    [LibraryImport(Lib, EntryPoint = "mallopt")]
    public static partial int Mallopt(int parameter, int value);

    public const int M_ARENA_MAX = -8;
}
