using System.Runtime.InteropServices;

namespace Vdisk.Native;

/// <summary>
/// The only place with P/Invoke, one libc function per file (LibC.*.cs) as in dotnet/runtime's
/// Interop/Unix/System.Native. Imports take <see cref="Microsoft.Win32.SafeHandles.SafeFileHandle"/>
/// (the marshaller keeps the descriptor alive across the call) and set
/// <c>SetLastError = true</c>: the marshaller saves errno right after the call, and callers read
/// that saved value through <see cref="LastError"/>, never the live errno, which any runtime
/// code between the call and the read may overwrite.
/// </summary>
internal static partial class LibC
{
    // The exact soname: a bare "libc" makes the runtime probe ~40 paths (libc.so is a linker
    // script) before it finds the library, on every start.
    internal const string Lib = "libc.so.6";

    /// <summary>errno as the marshaller saved it after the last import (or <see cref="FcntlLock"/>) on this thread.</summary>
    public static int LastError => Marshal.GetLastPInvokeError();

    /// <summary>strerror(errno) text, e.g. "No such file or directory".</summary>
    public static string StrError(int errno) => Marshal.GetPInvokeErrorMessage(errno);

    /// <summary>
    /// The exception for the errno of the last call: <c>PREFIX: strerror</c>, or strerror alone
    /// without a prefix, naming <paramref name="path"/>.
    /// </summary>
    public static NativeIOException LastErrorException(string? prefix, string? path)
    {
        int errno = LastError;
        string reason = StrError(errno);
        return new NativeIOException(errno, prefix is null ? reason : $"{prefix}: {reason}", path);
    }
}
