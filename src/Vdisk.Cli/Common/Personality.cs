using System.Runtime.CompilerServices;

namespace Vdisk.Cli.Common;

/// <summary>The tool a vdisk process acts as, chosen by the name it was started under.</summary>
internal enum Tool
{
    Vdisk,
    QemuImg,
    QemuIo,
    QemuStorageDaemon,
    QemuNbd,
}

/// <summary>
/// Multi-call: started through a symlink named like one of QEMU's tools, vdisk takes that tool's
/// command line, names itself as that tool in every message and answers <c>--version</c> in the
/// tool's shape, so scripts written for QEMU (its iotests, libvirt's version sniffing) keep working.
/// </summary>
internal static class Personality
{
    /// <summary>The QEMU release whose command lines and output vdisk reproduces.</summary>
    public const string QemuVersion = "7.2.0";

    /// <summary>The tool for a program path (argv[0]): its file name decides; anything else is vdisk.</summary>
    public static Tool FromProgramPath(string? argv0) => Path.GetFileName(argv0 ?? "") switch
    {
        "qemu-img" => Tool.QemuImg,
        "qemu-io" => Tool.QemuIo,
        "qemu-storage-daemon" => Tool.QemuStorageDaemon,
        "qemu-nbd" => Tool.QemuNbd,
        _ => Tool.Vdisk,
    };

    /// <summary>The name the tool prints before its messages (<c>qemu-img: ...</c>).</summary>
    public static string ProgramName(Tool tool) => tool switch
    {
        Tool.QemuImg => "qemu-img",
        Tool.QemuIo => "qemu-io",
        Tool.QemuStorageDaemon => "qemu-storage-daemon",
        Tool.QemuNbd => "qemu-nbd",
        _ => "vdisk",
    };

    /// <summary>
    /// <c>--version</c> as the QEMU tool prints it, with vdisk's own version where QEMU puts its
    /// package's: the first line keeps QEMU's shape (<c>qemu-img version 7.2.0 (vdisk 1.0.0)</c>),
    /// which is what version-sniffing scripts read.
    /// </summary>
    public static string VersionText(Tool tool, string vdiskVersion)
    {
        const string copyright = "Copyright (c) 2003-2022 Fabrice Bellard and the QEMU Project developers\n";
        string package = $"(vdisk {vdiskVersion})";
        return tool switch
        {
            Tool.QemuNbd => $"qemu-nbd {QemuVersion} {package}\nWritten by Anthony Liguori.\n\n{copyright}"
                + "This is free software; see the source for copying conditions.  There is NO\n"
                + "warranty; not even for MERCHANTABILITY or FITNESS FOR A PARTICULAR PURPOSE.\n",
            Tool.Vdisk => $"vdisk {vdiskVersion}\n",
            _ => $"{ProgramName(tool)} version {QemuVersion} {package}\n{copyright}",
        };
    }

    /// <summary>
    /// argv[0] as the process was started. NativeAOT keeps argv as given, so
    /// Environment.GetCommandLineArgs()[0] is it; under the JIT host it is the managed entry
    /// assembly's path instead (not the symlink it was started through), so there the kernel's
    /// copy is read (opening /proc/self/cmdline was ~2% of a one-shot command).
    /// </summary>
    public static string? ProgramPath() => RuntimeFeature.IsDynamicCodeSupported
        ? Vdisk.Native.ProcessCommandLine.ProgramPath() ?? Environment.GetCommandLineArgs()[0]
        : Environment.GetCommandLineArgs()[0];

    /// <summary>vdisk's version: major.minor.patch of the assembly.</summary>
    public static string VdiskVersion => BuildVersion.Short;
}
