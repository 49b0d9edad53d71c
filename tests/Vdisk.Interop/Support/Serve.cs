namespace Vdisk.Interop.Support;

/// <summary>Argument lists shared by vdisk serve and qemu-storage-daemon, and the images they serve.</summary>
public static class Serve
{
    public static string Escape(string path) => path.Replace(",", ",,");

    /// <summary>--blockdev for a file node f0 and a format node named <paramref name="node"/> on it.</summary>
    public static string[] Blockdevs(string image, string format, string node = "disk", bool readOnly = false, bool active = true)
    {
        string ro = readOnly ? ",read-only=on" : "";
        string act = active ? "" : ",active=off";
        return
        [
            "--blockdev", $"driver=file,node-name={node}-file,filename={Escape(image)}{ro}{act}",
            "--blockdev", $"driver={format},node-name={node},file={node}-file{ro}{act}",
        ];
    }

    public static string[] NbdServer(string socket) => ["--nbd-server", $"addr.type=unix,addr.path={Escape(socket)}"];

    public static string[] Export(string node = "disk", string name = "disk", bool writable = false, string id = "e0", string extra = "") =>
        ["--export", $"type=nbd,id={id},node-name={node},name={name},writable={(writable ? "on" : "off")}{extra}"];

    public static string[] Monitor(string socket) =>
        ["--chardev", $"socket,id=m0,path={Escape(socket)},server=on,wait=off", "--monitor", "chardev=m0"];

    public static string Uri(string socket, string export = "disk") => $"nbd+unix:///{export}?socket={socket}";

    /// <summary>A raw image with recognisable data: 0xab in the first 64 KiB, 0xcd at 1 MiB, holes elsewhere.</summary>
    public static string PatternedRaw(TempDir dir, string name = "disk.raw", long size = 4 << 20)
    {
        var path = dir.RawImage(name, size);
        Check(Programs.Run("qemu-io", "-f", "raw", path, "-c", "write -P 0xab 0 64k", "-c", "write -P 0xcd 1M 64k"));
        return path;
    }

    /// <summary>The same content as a qcow2 image (created and written by QEMU).</summary>
    public static string PatternedQcow2(TempDir dir, string name = "disk.qcow2", long size = 4 << 20)
    {
        var path = dir.File(name);
        Check(Programs.Run("qemu-img", "create", "-q", "-f", "qcow2", path, size.ToString(System.Globalization.CultureInfo.InvariantCulture)));
        Check(Programs.Run("qemu-io", "-f", "qcow2", path, "-c", "write -P 0xab 0 64k", "-c", "write -P 0xcd 1M 64k"));
        return path;
    }

    /// <summary>A qcow2 overlay over <paramref name="backing"/>.</summary>
    public static string Overlay(TempDir dir, string backing, string name = "overlay.qcow2")
    {
        var path = dir.File(name);
        Check(Programs.Run("qemu-img", "create", "-q", "-f", "qcow2", "-b", backing, "-F", "qcow2", path));
        return path;
    }

    public static void Check(RunResult r)
    {
        if (r.ExitCode != 0) throw new InvalidOperationException(r.ToString());
    }
}
