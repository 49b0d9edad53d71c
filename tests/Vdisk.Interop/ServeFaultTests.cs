using Vdisk.Graph;
using Vdisk.Interop.Support;
using Vdisk.Permissions;
using Vdisk.Server.Daemon;
using Xunit;

namespace Vdisk.Interop;

/// <summary>
/// A fault nobody foresaw below an export (a bug in a driver, say) must not leave a client
/// waiting for ever or end its connection without a word: the requests outstanding are
/// answered with EIO, the daemon logs one line naming the export and the error, the
/// connection ends, and the daemon goes on serving. The daemon runs in this process so that
/// a faulty node can be put under an export; the client is real qemu-io.
/// </summary>
public class ServeFaultTests
{
    /// <summary>A 1 MiB node of zeroes whose reads of the first 64 KiB fail with <see cref="Fault"/>.</summary>
    private sealed class FaultyNode(string name, Func<Exception> fault) : BlockNode(name, NodeFlags.None, "faulty")
    {
        public Func<Exception> Fault { get; } = fault;

        public override string DriverName => "faulty";
        public override bool IsProtocol => false;
        public override IChildPermissionRule PermissionRule => DefaultChildPermissionRule.Instance;
        public override long Length => 1 << 20;

        public override ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            if (offset < 64 * 1024) throw Fault();
            buffer.Span.Clear();
            return ValueTask.CompletedTask;
        }

        public override ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default) =>
            throw new NotSupportedException();

        public override ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags flags = ZeroFlags.None, CancellationToken cancellationToken = default) =>
            throw new NotSupportedException();

        public override ValueTask DiscardAsync(long offset, long length, CancellationToken cancellationToken = default) =>
            throw new NotSupportedException();

        public override ValueTask FlushAsync(CancellationToken cancellationToken = default) => ValueTask.CompletedTask;

        public override ValueTask<BlockStatus> GetBlockStatusAsync(long offset, long length, CancellationToken cancellationToken = default) =>
            ValueTask.FromResult(new BlockStatus(length, BlockStatusFlags.Data | BlockStatusFlags.Allocated));
    }

    public static TheoryData<string> Faults => new() { "bug", "cancelled" };

    private static Exception MakeFault(string kind) => kind switch
    {
        "bug" => new InvalidOperationException("driver bug: table index out of step"),
        _ => new TaskCanceledException("driver gave up waiting"),
    };

    [Theory]
    [MemberData(nameof(Faults))]
    public async Task UnexpectedFaultBelowAnExport_IsAnsweredLoggedAndEndsOnlyThatConnection(string kind)
    {
        using var dir = new TempDir();
        var logged = new List<string>();
        var previousSink = Diagnostics.WarningSink;
        Diagnostics.WarningSink = message =>
        {
            lock (logged) logged.Add(message);
        };
        try
        {
            await using var daemon = new StorageDaemon();
            daemon.Graph.Add(new FaultyNode("faulty", () => MakeFault(kind)));
            string nbd = dir.File("n.sock");
            daemon.StartNbdServer(new NbdServerRequest(new UnixListenAddress(nbd), 0));
            await daemon.AddExportAsync(new ExportRequest("e0", "faulty", "faulty", null, Writable: false, ShareRw: false));

            // The client must get an answer, not wait: qemu-io reports the error and exits.
            var failing = await Task.Run(() => Programs.Run("qemu-io", ["-r", "-f", "raw", Serve.Uri(nbd, "faulty"), "-c", "read 0 4k"], null, TimeSpan.FromSeconds(60)));
            Assert.True(failing.Stdout.Contains("read failed: Input/output error"), failing.ToString());

            // The daemon goes on: a new connection reads what does not fault.
            var healthy = await Task.Run(() => Programs.Run("qemu-io", ["-r", "-f", "raw", Serve.Uri(nbd, "faulty"), "-c", "read -P 0 512k 4k"], null, TimeSpan.FromSeconds(60)));
            Assert.Equal(0, healthy.ExitCode);
            Assert.DoesNotContain("failed", healthy.Stdout + healthy.Stderr);

            string message = MakeFault(kind).Message;
            string line;
            lock (logged) line = Assert.Single(logged, l => l.Contains(message, StringComparison.Ordinal));
            Assert.Contains("'faulty'", line);
            Assert.DoesNotContain('\n', line);
        }
        finally
        {
            Diagnostics.WarningSink = previousSink;
        }
    }
}
