using CsCheck;
using Vdisk.Locking.Cluster;
using Vdisk.Options;
using Xunit;

namespace Vdisk.Tests.Locking.Cluster;

/// <summary><c>cluster-lock-id=auto</c>: a block device's WWID, dm UUID or serial as its id, the same on every host.</summary>
public sealed class AutoLockIdTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("vdisk-sysfs-").FullName;

    public void Dispose() => Directory.Delete(_root, recursive: true);

    /// <summary>A made sysfs entry for device <paramref name="name"/> and a "/dev" node name pointing at it.</summary>
    private string Device(string name, params (string File, string Value)[] files)
    {
        foreach (var (file, value) in files)
        {
            string path = Path.Combine(_root, "class", "block", name, file);
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            File.WriteAllText(path, value + "\n");
        }
        string node = Path.Combine(_root, "dev", name);
        Directory.CreateDirectory(Path.GetDirectoryName(node)!);
        File.WriteAllText(node, "");
        return node;
    }

    [Fact]
    public void TheWwidComesFirst_ThenTheDmUuid_ThenTheSerial()
    {
        Assert.Equal("wwid:naa.6001405abcdef", ClusterLocks.DeviceIdentity(
            Device("sdb", ("device/wwid", "naa.6001405abcdef"), ("device/serial", "S1")), _root));
        Assert.Equal("wwid:eui.0025388b91c0a1b2", ClusterLocks.DeviceIdentity(Device("nvme0n1", ("wwid", "eui.0025388b91c0a1b2")), _root));
        Assert.Equal("dm-uuid:mpath-3600140", ClusterLocks.DeviceIdentity(Device("dm-3", ("dm/uuid", "mpath-3600140")), _root));
        Assert.Equal("serial:QM00001", ClusterLocks.DeviceIdentity(Device("sda", ("device/serial", "QM00001")), _root));
        // virtio-blk shows its serial on the disk itself.
        Assert.Equal("serial:177663404522362", ClusterLocks.DeviceIdentity(Device("vda", ("serial", "177663404522362")), _root));
        Assert.Null(ClusterLocks.DeviceIdentity(Device("loop0", ("loop/backing_file", "/img")), _root));
        Assert.Null(ClusterLocks.DeviceIdentity(Device("sdc", ("device/wwid", "   ")), _root));
        // A /dev/disk/by-id link names the device it points to.
        Device("sdd", ("device/serial", "S4"));
        string link = Path.Combine(_root, "dev", "disk-by-id-ata-S4");
        File.CreateSymbolicLink(link, "sdd");
        Assert.Equal("serial:S4", ClusterLocks.DeviceIdentity(link, _root));
    }

    [Fact]
    public void AnIdentityBecomesAValidId_SpacesAndPlusEscaped()
    {
        Assert.Equal("wwid:naa.6001405abcdef", ClusterLocks.LockIdFromDeviceIdentity("wwid:naa.6001405abcdef"));
        Assert.Equal("wwid:t10.ATA+20+20+20+20QEMU+20HARDDISK", ClusterLocks.LockIdFromDeviceIdentity("wwid:t10.ATA    QEMU HARDDISK"));
        Assert.Equal("serial:a+2bb", ClusterLocks.LockIdFromDeviceIdentity("serial:a+b"));
        string longId = ClusterLocks.LockIdFromDeviceIdentity("serial:" + new string(' ', 100));
        Assert.StartsWith("serial:sha256-", longId);
        Assert.Equal("serial:sha256-".Length + 64, longId.Length);
    }

    [Fact]
    public void DifferentIdentitiesNeverShareAnId_AndEveryIdIsValid()
    {
        // Identities built from pieces that need escaping and pieces that look like escapes.
        string[] pieces = ["a", "b", "2b", "20", " ", "+", "é", "/", ".", ":"];
        var identity = Gen.Int[0, pieces.Length - 1].Select(i => pieces[i]).Array[0, 12].Select(p => "wwid:" + string.Concat(p));
        Gen.Select(identity, identity)
            .Sample(pair =>
            {
                var (a, b) = pair;
                string idA = ClusterLocks.LockIdFromDeviceIdentity(a), idB = ClusterLocks.LockIdFromDeviceIdentity(b);
                Assert.Equal(idA, ClusterLockSettings.ValidateLockId(idA));
                Assert.Equal(a == b, idA == idB);
            });
    }

    [Fact]
    public void AutoOnARegularFileOrADeviceWithoutIdentity_SaysWhatToDo()
    {
        var file = Assert.Throws<OptionException>(() => ClusterLocks.AutoLockIdFor("/var/lib/img.qcow2", isBlockDevice: false, deviceId: null));
        Assert.Equal("cluster-lock-id=auto needs a block device with a WWID, dm UUID or serial; '/var/lib/img.qcow2' is not a block device: give the image an id of its own", file.Message);
        var loop = Assert.Throws<OptionException>(() => ClusterLocks.AutoLockIdFor("/dev/loop0", isBlockDevice: true, deviceId: null));
        Assert.Equal("cluster-lock-id=auto: the kernel shows no WWID, dm UUID or serial for '/dev/loop0': give the image an id of its own", loop.Message);
        Assert.Equal("dm-uuid:mpath-36001", ClusterLocks.AutoLockIdFor("/dev/dm-3", isBlockDevice: true, deviceId: "dm-uuid:mpath-36001"));
    }
}
