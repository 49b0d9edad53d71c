using Vdisk.Interop.Support;
using Vdisk.Server.Nbd;
using Xunit;

namespace Vdisk.Interop;

/// <summary>
/// Lock hand-over between two vdisk serve daemons, as QEMU 10.0's blockdev-set-active does it
/// between two qemu-storage-daemons during a VM migration.
/// What is true on raw with QEMU's semantics alone: the source's inactivation releases every
/// byte, the destination takes them only when it activates, so for that moment nobody holds
/// the image and a writer (qemu-io shares everything and tests only bytes 200 and 201) gets in;
/// after that neither side can activate. vdisk closes the gap with x-vdisk-blockdev-reserve:
/// the inactive destination locks byte 201 on its own descriptor before the source lets go.
/// </summary>
public class ServeHandoverTests
{
    private const string Refused = "Failed to get \"write\" lock +hint";

    private sealed class Side : IDisposable
    {
        public required Daemon Daemon { get; init; }
        public required QmpClient Qmp { get; init; }
        public required string Nbd { get; init; }

        public string Execute(string json) => Qmp.Execute(json);

        public void Dispose()
        {
            Qmp.Dispose();
            Daemon.Dispose();
        }
    }

    private static Side Start(TempDir dir, string name, string image, bool active, string format = "raw")
    {
        string nbd = dir.File(name + ".nbd"), qmp = dir.File(name + ".qmp");
        var daemon = Daemon.Vdisk([.. Serve.Blockdevs(image, format, active: active), .. Serve.NbdServer(nbd), .. Serve.Export(writable: true), .. Serve.Monitor(qmp)], nbd, qmp);
        return new Side { Daemon = daemon, Qmp = QmpClient.Connect(qmp), Nbd = nbd };
    }

    private static string SetActive(Side side, bool active) =>
        side.Execute($"{{\"execute\":\"blockdev-set-active\",\"arguments\":{{\"node-name\":\"disk\",\"active\":{(active ? "true" : "false")}}}}}");

    private static string Reserve(Side side, bool reserve) =>
        side.Execute($"{{\"execute\":\"x-vdisk-blockdev-reserve\",\"arguments\":{{\"node-name\":\"disk\",\"reserve\":{(reserve ? "true" : "false")}}}}}");

    private static string Writer(string image) => Outcome.Of(Programs.Run("qemu-io", "-f", "raw", image, "-c", "write -P 0xee 0 4k"));

    private static void Write(string socket, ulong offset, byte pattern, int length = 65536)
    {
        using var c = new NbdClient(socket);
        c.Open("disk");
        c.SendRequest(NbdCommand.Write, 1, offset, (uint)length, payload: Enumerable.Repeat(pattern, length).ToArray());
        var reply = c.ReadReply();
        if (reply.ErrorNumber != NbdError.None) throw new IOException($"write failed: {reply.ErrorNumber} {reply.ErrorMessage}");
    }

    private static NbdError WriteError(string socket)
    {
        using var c = new NbdClient(socket);
        c.Open("disk");
        c.SendRequest(NbdCommand.Write, 1, 0, 512, payload: new byte[512]);
        return c.ReadReply().ErrorNumber;
    }

    private static byte[] Read(string socket, ulong offset, uint length)
    {
        using var c = new NbdClient(socket);
        c.Open("disk");
        return c.Read(offset, length);
    }

    /// <summary>
    /// Samples, as fast as it can, whether each daemon holds byte 101 (write). It reads the
    /// kernel's per-process view (/proc/PID/fdinfo): /proc/locks shows OFD locks with pid -1, so
    /// it cannot tell the two daemons apart, nor from qemu-io, which holds 101 for an instant
    /// while it is being refused (QEMU locks, then tests). The destination is read first: as it
    /// only takes the byte after the source let go, a sample can then never show both wrongly.
    /// </summary>
    private sealed class WriteHolderSampler : IDisposable
    {
        private readonly string _image;
        private readonly int _source, _destination;
        private readonly Thread _thread;
        private volatile bool _stop;

        public WriteHolderSampler(string image, int source, int destination)
        {
            (_image, _source, _destination) = (image, source, destination);
            _thread = new Thread(Run) { IsBackground = true };
            _thread.Start();
        }

        public int Samples { get; private set; }
        public int BothHoldWrite { get; private set; }
        public bool SawSourceWriting { get; private set; }
        public bool SawDestinationWriting { get; private set; }

        private void Run()
        {
            while (!_stop)
            {
                bool destination = LockBytesHeld.Read(_destination, _image).Contains(101);
                bool source = LockBytesHeld.Read(_source, _image).Contains(101);
                Samples++;
                if (source && destination) BothHoldWrite++;
                SawSourceWriting |= source;
                SawDestinationWriting |= destination;
            }
        }

        public void Dispose()
        {
            _stop = true;
            _thread.Join();
        }
    }

    [Fact]
    public void Handover_WithReservation_NeverLetsAWriterIn_AndKeepsTheData()
    {
        using var dir = new TempDir();
        var image = dir.RawImage("disk.raw", 4 << 20);
        using var source = Start(dir, "source", image, active: true);
        using var destination = Start(dir, "destination", image, active: false);
        Assert.Equal("100,101,201", LockBytesHeld.Describe(LockBytesHeld.Read(source.Daemon.Pid, image)));
        Assert.Empty(LockBytesHeld.Read(destination.Daemon.Pid, image));
        Write(source.Nbd, 0, 0x5a);
        Write(source.Nbd, 3 << 20, 0xa5);

        // The destination may not take the locks while the source holds them.
        Assert.Equal("{\"error\": {\"class\": \"GenericError\", \"desc\": \"Failed to get \\\"write\\\" lock\"}}", SetActive(destination, true));

        var outcomes = new List<string>();
        using (var sampler = new WriteHolderSampler(image, source.Daemon.Pid, destination.Daemon.Pid))
        {
            outcomes.Add("before: " + Writer(image));
            Assert.Equal("{\"return\": {}}", Reserve(destination, true));
            Assert.Equal("201", LockBytesHeld.Describe(LockBytesHeld.Read(destination.Daemon.Pid, image)));
            outcomes.Add("reserved: " + Writer(image));

            Assert.Equal("{\"return\": {}}", SetActive(source, false));
            Assert.Empty(LockBytesHeld.Read(source.Daemon.Pid, image));
            outcomes.Add("during: " + Writer(image));
            // The inactive source still serves reads, and refuses writes.
            Assert.Equal(NbdError.Perm, WriteError(source.Nbd));
            Assert.All(Read(source.Nbd, 0, 65536), b => Assert.Equal(0x5a, b));

            Assert.Equal("{\"return\": {}}", SetActive(destination, true));
            Assert.Equal("100,101,201", LockBytesHeld.Describe(LockBytesHeld.Read(destination.Daemon.Pid, image)));
            outcomes.Add("after: " + Writer(image));

            Assert.True(sampler.Samples > 0 && sampler.SawSourceWriting && sampler.SawDestinationWriting);
            Assert.Equal(0, sampler.BothHoldWrite);
        }
        Assert.Equal(["before: " + Refused, "reserved: " + Refused, "during: " + Refused, "after: " + Refused], outcomes);
        Assert.All(Read(destination.Nbd, 0, 65536), b => Assert.Equal(0x5a, b));
        Assert.All(Read(destination.Nbd, 3 << 20, 65536), b => Assert.Equal(0xa5, b));
        Write(destination.Nbd, 1 << 20, 0x33);
        Assert.All(Read(destination.Nbd, 1 << 20, 65536), b => Assert.Equal(0x33, b));
        Assert.Contains("\"active\": false", source.Execute("{\"execute\":\"query-named-block-nodes\"}"));
    }

    [Fact]
    public void Handover_WithQemusStepsAlone_LeavesAGapAWriterCanTake()
    {
        using var dir = new TempDir();
        var image = dir.RawImage("disk.raw", 4 << 20);
        using var source = Start(dir, "source", image, active: true);
        using var destination = Start(dir, "destination", image, active: false);
        Assert.Equal(Refused, Writer(image));
        Assert.Equal("{\"return\": {}}", SetActive(source, false));
        // Nobody holds the image now: a one-shot writer gets in...
        Assert.Equal("ok", Writer(image));
        // ...and one that stays keeps both daemons from activating: the data is safe, the VM is stuck.
        using var intruder = Holder.Start(image, "qemu-io", "-f", "raw", image, "-c", "sleep 60000");
        Assert.Equal("{\"error\": {\"class\": \"GenericError\", \"desc\": \"Failed to get shared \\\"write\\\" lock\"}}", SetActive(destination, true));
        Assert.Equal("{\"error\": {\"class\": \"GenericError\", \"desc\": \"Failed to get shared \\\"write\\\" lock\"}}", SetActive(source, true));
        intruder.Dispose();
        Assert.Equal("{\"return\": {}}", SetActive(destination, true));
    }

    [Fact]
    public void CancelledHandover_SourceTakesItsLocksBack()
    {
        using var dir = new TempDir();
        var image = dir.RawImage("disk.raw", 4 << 20);
        using var source = Start(dir, "source", image, active: true);
        using var destination = Start(dir, "destination", image, active: false);
        Write(source.Nbd, 0, 0x11);
        Assert.Equal("{\"return\": {}}", Reserve(destination, true));
        Assert.Equal("{\"return\": {}}", SetActive(source, false));
        // While the destination's reservation stands, the source cannot come back either.
        Assert.Equal("{\"error\": {\"class\": \"GenericError\", \"desc\": \"Failed to get \\\"write\\\" lock\"}}", SetActive(source, true));
        // Withdrawing: blockdev-set-active active=false on the (inactive) destination drops the reservation.
        Assert.Equal("{\"return\": {}}", SetActive(destination, false));
        Assert.Empty(LockBytesHeld.Read(destination.Daemon.Pid, image));
        Assert.Equal("{\"return\": {}}", SetActive(source, true));
        Assert.Equal("100,101,201", LockBytesHeld.Describe(LockBytesHeld.Read(source.Daemon.Pid, image)));
        Write(source.Nbd, 0, 0x22);
        Assert.All(Read(source.Nbd, 0, 65536), b => Assert.Equal(0x22, b));
        Assert.Equal(Refused, Writer(image));
    }

    [Fact]
    public void KillingTheReservingDestination_FreesTheSourcesWayBack()
    {
        using var dir = new TempDir();
        var image = dir.RawImage("disk.raw", 4 << 20);
        using var source = Start(dir, "source", image, active: true);
        var destination = Start(dir, "destination", image, active: false);
        Assert.Equal("{\"return\": {}}", Reserve(destination, true));
        Assert.Equal("{\"return\": {}}", SetActive(source, false));
        destination.Daemon.Signal("KILL");
        destination.Dispose();
        Assert.Equal("{\"return\": {}}", SetActive(source, true));
    }

    [Fact]
    public void SetActive_ErrorsAreQemus()
    {
        using var dir = new TempDir();
        var image = dir.RawImage();
        using var side = Start(dir, "s", image, active: true);
        Assert.Equal("{\"error\": {\"class\": \"GenericError\", \"desc\": \"Failed to find node with node-name='nope'\"}}",
            side.Execute("{\"execute\":\"blockdev-set-active\",\"arguments\":{\"node-name\":\"nope\",\"active\":false}}"));
        Assert.Equal("{\"error\": {\"class\": \"GenericError\", \"desc\": \"Node has active parent node\"}}",
            side.Execute("{\"execute\":\"blockdev-set-active\",\"arguments\":{\"node-name\":\"disk-file\",\"active\":false}}"));
        Assert.Equal("{\"error\": {\"class\": \"GenericError\", \"desc\": \"Parameter 'active' is missing\"}}",
            side.Execute("{\"execute\":\"blockdev-set-active\",\"arguments\":{\"node-name\":\"disk\"}}"));
        // Without a node name: everything, both ways.
        Assert.Equal("{\"return\": {}}", side.Execute("{\"execute\":\"blockdev-set-active\",\"arguments\":{\"active\":false}}"));
        Assert.Empty(LockBytesHeld.Read(side.Daemon.Pid, image));
        Assert.Equal("{\"return\": {}}", side.Execute("{\"execute\":\"blockdev-set-active\",\"arguments\":{\"active\":true}}"));
        Assert.Equal("100,101,201", LockBytesHeld.Describe(LockBytesHeld.Read(side.Daemon.Pid, image)));
    }

    [Fact]
    public void Qcow2Destination_ReadsMetadataTheSourceWroteWhileItWaited()
    {
        using var dir = new TempDir();
        var image = Serve.PatternedQcow2(dir, size: 2L << 30);
        using var source = Start(dir, "source", image, active: true, format: "qcow2");
        using var destination = Start(dir, "destination", image, active: false, format: "qcow2");
        // New L2 tables, a grown refcount structure: the destination opened the image before these existed.
        for (int i = 0; i < 3; i++) Write(source.Nbd, (ulong)(512 + 384 * i) << 20, (byte)(0x61 + i));
        Assert.Equal("{\"return\": {}}", Reserve(destination, true));
        Assert.Equal("{\"return\": {}}", SetActive(source, false));
        Assert.Equal("{\"return\": {}}", SetActive(destination, true));
        for (int i = 0; i < 3; i++) Assert.All(Read(destination.Nbd, (ulong)(512 + 384 * i) << 20, 65536), b => Assert.Equal((byte)(0x61 + i), b));
        // Its own allocations must not reuse clusters the source allocated.
        for (int i = 0; i < 3; i++) Write(destination.Nbd, (ulong)(640 + 384 * i) << 20, (byte)(0x71 + i));
        destination.Execute("{\"execute\":\"quit\"}");
        destination.Daemon.WaitForExit();
        source.Execute("{\"execute\":\"quit\"}");
        source.Daemon.WaitForExit();
        Assert.Equal(0, Programs.Run("qemu-img", "check", image).ExitCode);
        var r = Programs.Run("qemu-io", "-r", "-f", "qcow2", image, "-c", "read -P 0x61 512M 64k", "-c", "read -P 0x63 1280M 64k", "-c", "read -P 0x73 1408M 64k", "-c", "read -P 0xab 0 64k");
        Assert.True(r.ExitCode == 0 && !r.Stdout.Contains("Pattern verification failed"), r.ToString());
    }

    [Fact]
    public void Qcow2Source_KeepsConsistentReadWhenInactive()
    {
        using var dir = new TempDir();
        var image = Serve.PatternedQcow2(dir);
        using var source = Start(dir, "source", image, active: true, format: "qcow2");
        using var destination = Start(dir, "destination", image, active: false, format: "qcow2");
        Assert.Empty(LockBytesHeld.Read(destination.Daemon.Pid, image));
        Write(source.Nbd, 2 << 20, 0x44);
        Assert.Equal("{\"return\": {}}", Reserve(destination, true));
        Assert.Equal("{\"return\": {}}", SetActive(source, false));
        Assert.Equal("100", LockBytesHeld.Describe(LockBytesHeld.Read(source.Daemon.Pid, image)));
        Assert.Equal(Refused, Outcome.Of(Programs.Run("qemu-io", "-f", "qcow2", image, "-c", "write 0 4k")));
        Assert.Equal("{\"return\": {}}", SetActive(destination, true));
        Assert.All(Read(destination.Nbd, 2 << 20, 65536), b => Assert.Equal(0x44, b));
    }
}
