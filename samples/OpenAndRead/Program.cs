// Opens a raw image the way a QEMU virtual disk does (taking write, refusing other writers),
// writes and reads a sector, shows the lock bytes it holds, and shows what a second opener gets.
//
//   dotnet run --project samples/OpenAndRead -- disk.img
using Vdisk;
using Vdisk.Locking;
using Vdisk.Permissions;

if (args.Length != 1)
{
    Console.Error.WriteLine("usage: OpenAndRead IMAGE");
    return 2;
}
string path = args[0];
var source = ImageSource.FromFile(path, "raw");

// A guest device's request: consistent read + write, sharing neither write nor (unless resizable) resize.
var deviceRequest = BackendPermissions.GuestDevice(readOnly: false, resizable: true, shareRw: false);
await using var disk = DiskImage.Open(source, OpenFlags.ReadWrite, deviceRequest, name: "disk0");
Console.WriteLine($"opened {path}: {disk.Length} bytes, {disk.Permissions}");

var sector = new byte[512];
sector.AsSpan().Fill(0x5a);
await disk.WriteAsync(0, sector);
await disk.FlushAsync();
var back = new byte[512];
await disk.ReadAsync(0, back);
Console.WriteLine($"read back {(back.AsSpan().SequenceEqual(sector) ? "the same" : "DIFFERENT")} bytes");

// A second writer (qemu-io's request) is refused, exactly as QEMU would refuse it.
try
{
    await using var second = DiskImage.Open(source, AccessProfiles.QemuIoReadWrite);
    Console.WriteLine("second writer admitted (unexpected)");
}
catch (LockConflictException e)
{
    Console.WriteLine($"second writer refused: {e.Message} ({e.Hint})");
}

// A reader that shares writes is admitted.
await using (var reader = DiskImage.Open(source, AccessProfiles.QemuIoReadOnly))
{
    Console.WriteLine($"reader admitted: {reader.Permissions}");
}
return 0;
