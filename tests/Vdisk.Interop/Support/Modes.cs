namespace Vdisk.Interop.Support;

/// <summary>
/// A way of opening a raw image, spelled for QEMU's tool and for its vdisk twin. One-shot modes
/// run a command and exit; holder modes keep the image open (qemu-io -c 'sleep').
/// </summary>
public sealed record Mode(string Name, Func<string, (string Program, string[] Args)> Qemu, Func<string, (string Program, string[] Args)>? Vdisk)
{
    public override string ToString() => Name;

    private static (string, string[]) QemuIo(params string[] args) => ("qemu-io", args);
    private static (string, string[]) VdiskIo(params string[] args) => (Programs.Vdisk, ["io", .. args]);

    private static string Opts(string img, string extra) => $"driver=raw,file.driver=file,file.filename={img.Replace(",", ",,")}{extra}";

    /// <summary>Modes that can hold an image: the argument list ends in a long sleep.</summary>
    public static readonly Mode[] Holders =
    [
        new("io rw", img => QemuIo("-f", "raw", img, "-c", "sleep 60000"), img => VdiskIo("-f", "raw", img, "-c", "sleep 60000")),
        new("io -r", img => QemuIo("-r", "-f", "raw", img, "-c", "sleep 60000"), img => VdiskIo("-r", "-f", "raw", img, "-c", "sleep 60000")),
        new("io -r -U", img => QemuIo("-r", "-U", "-f", "raw", img, "-c", "sleep 60000"), img => VdiskIo("-r", "-U", "-f", "raw", img, "-c", "sleep 60000")),
        new("io locking=off", img => QemuIo("--image-opts", Opts(img, ",file.locking=off"), "-c", "sleep 60000"),
            img => VdiskIo("--image-opts", Opts(img, ",file.locking=off"), "-c", "sleep 60000")),
        new("io open -o locking=off", img => QemuIo("-c", $"open -o driver=raw -o file.locking=off {img}", "-c", "sleep 60000"),
            img => VdiskIo("-c", $"open -o driver=raw -o file.locking=off {img}", "-c", "sleep 60000")),
        new("io open -r -U", img => QemuIo("-c", $"open -r -U -o driver=raw {img}", "-c", "sleep 60000"),
            img => VdiskIo("-c", $"open -r -U -o driver=raw {img}", "-c", "sleep 60000")),
        new("qemu-nbd", img => ("qemu-nbd", ["-f", "raw", "--socket", img + ".sock", img]),
            img => (Programs.VdiskAs("qemu-nbd"), ["-f", "raw", "--socket", img + ".sock", img])),
        new("qemu-nbd -r", img => ("qemu-nbd", ["-r", "-f", "raw", "--socket", img + ".sock", img]),
            img => (Programs.VdiskAs("qemu-nbd"), ["-r", "-f", "raw", "--socket", img + ".sock", img])),
        new("virtio-blk", img => ("qemu-system-x86_64", ["-S", "-nodefaults", "-display", "none", "-machine", "pc",
            "-drive", $"if=none,id=d0,file={img.Replace(",", ",,")},format=raw", "-device", "virtio-blk-pci,drive=d0"]), null),
        new("virtio-blk share-rw", img => ("qemu-system-x86_64", ["-S", "-nodefaults", "-display", "none", "-machine", "pc",
            "-drive", $"if=none,id=d0,file={img.Replace(",", ",,")},format=raw", "-device", "virtio-blk-pci,drive=d0,share-rw=on"]), null),
    ];

    /// <summary>Modes that open, do one thing and exit.</summary>
    public static readonly Mode[] OneShots =
    [
        new("io rw read", img => QemuIo("-f", "raw", img, "-c", "read 0 4k"), img => VdiskIo("-f", "raw", img, "-c", "read 0 4k")),
        new("io write", img => QemuIo("-f", "raw", img, "-c", "write 0 4k"), img => VdiskIo("-f", "raw", img, "-c", "write 0 4k")),
        new("io -r read", img => QemuIo("-r", "-f", "raw", img, "-c", "read 0 4k"), img => VdiskIo("-r", "-f", "raw", img, "-c", "read 0 4k")),
        new("io -r -U read", img => QemuIo("-r", "-U", "-f", "raw", img, "-c", "read 0 4k"), img => VdiskIo("-r", "-U", "-f", "raw", img, "-c", "read 0 4k")),
        new("io locking=off write", img => QemuIo("--image-opts", Opts(img, ",file.locking=off"), "-c", "write 0 4k"),
            img => VdiskIo("--image-opts", Opts(img, ",file.locking=off"), "-c", "write 0 4k")),
        new("info", img => ("qemu-img", ["info", "-f", "raw", img]), img => (Programs.Vdisk, ["info", "-f", "raw", img])),
        new("info -U", img => ("qemu-img", ["info", "-U", "-f", "raw", img]), img => (Programs.Vdisk, ["info", "-U", "-f", "raw", img])),
        new("info json", img => ("qemu-img", ["info", "--output=json", img]), img => (Programs.Vdisk, ["info", "--output=json", img])),
    ];
}
