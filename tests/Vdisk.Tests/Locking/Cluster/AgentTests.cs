using System.Buffers.Binary;
using System.IO.Pipelines;
using System.Text;
using Vdisk.Locking.Cluster;
using Vdisk.Locking.Cluster.Agent;
using Xunit;

namespace Vdisk.Tests.Locking.Cluster;

/// <summary>
/// vdisk's side (AgentClusterStore) and the helper's side (AgentServer) of the etcd helper's
/// protocol, connected in process through pipes, over the in-memory store.
/// </summary>
public class AgentTests
{
    private static readonly ClusterLockSettings Settings = new() { Endpoints = [new Uri("http://memory:2379")] };

    /// <summary>A helper in process: the server loop over <paramref name="store"/>, ending when its input closes.</summary>
    private sealed class InProcessHelper
    {
        private readonly Pipe _requests = new(), _responses = new();

        public InProcessHelper(IClusterStore store)
        {
            Served = Task.Run(async () =>
            {
                try
                {
                    await AgentServer.RunAsync(_requests.Reader.AsStream(), _responses.Writer.AsStream(), store);
                }
                finally
                {
                    await _responses.Writer.CompleteAsync();
                }
            });
        }

        public Task Served { get; }

        private bool _dead;

        public AgentChannel Channel() => new(_requests.Writer.AsStream(), _responses.Reader.AsStream(),
            () => "exited with status 0", () =>
            {
                // A dead helper's late writes fail (here: on a completed pipe); only a live one must end cleanly.
                if (!_dead) Served.Wait(TimeSpan.FromSeconds(10));
            });

        /// <summary>The helper dies: its output ends whatever it was doing.</summary>
        public void Die()
        {
            _dead = true;
            _responses.Writer.Complete();
        }
    }

    [Fact]
    public void Requests_RoundTrip()
    {
        AgentRequest[] requests =
        [
            new(1, AgentOperation.Grant, 10),
            new(2, AgentOperation.KeepAlive, 0x694d0001),
            new(3, AgentOperation.Commit, Prefix: "vdisk/v1/img/", Writes: [new StoreWrite("k/1", [1, 2, 255], 7), new StoreWrite("k/2", null, 0)]),
            new(4, AgentOperation.Commit, Writes: []),
            new(5, AgentOperation.WaitForChange, 41, "p/", "/holder-é"),
            new(6, AgentOperation.Cancel),
        ];
        foreach (var request in requests)
        {
            var decoded = AgentRequest.Decode(request.Encode());
            Assert.Equal(request with { Writes = null }, decoded with { Writes = null });
            Assert.Equal(request.Writes?.Select(w => (w.Key, w.Value is null ? null : Convert.ToHexString(w.Value), w.Lease)),
                decoded.Writes?.Select(w => (w.Key, w.Value is null ? null : Convert.ToHexString(w.Value), w.Lease)));
        }
    }

    [Fact]
    public void Responses_RoundTrip()
    {
        AgentResponse[] responses =
        [
            new(1, Number: 0x694d0001, Ttl: 10),
            new(2, Revision: 12, Entries: [new StoreEntry("a", [0, 9], 3, 4, 5), new StoreEntry("b", [], 6, 6, 0)]),
            new(3, AgentErrorKind.Unavailable, "etcd unreachable while reading lock keys: http://x:1 (Connection refused)"),
            new(4, AgentErrorKind.Fenced, "fenced"),
            new(5, AgentErrorKind.Refused, "etcd at http://x:1 refused writing lock keys: permission denied"),
            new(6, AgentErrorKind.Canceled, "canceled"),
        ];
        foreach (var response in responses)
        {
            var decoded = AgentResponse.Decode(response.Encode());
            Assert.Equal(response with { Entries = null }, decoded with { Entries = null });
            Assert.Equal(response.Entries?.Select(e => (e.Key, Convert.ToHexString(e.Value), e.CreateRevision, e.ModRevision, e.Lease)),
                decoded.Entries?.Select(e => (e.Key, Convert.ToHexString(e.Value), e.CreateRevision, e.ModRevision, e.Lease)));
        }
        Assert.IsType<ClusterUnavailableException>(responses[2].ToException(default));
        Assert.IsType<ClusterFencedException>(responses[3].ToException(default));
        Assert.IsType<ClusterLockException>(responses[4].ToException(default));
        Assert.IsType<OperationCanceledException>(responses[5].ToException(default));
        Assert.Null(responses[0].ToException(default));
    }

    [Theory]
    [InlineData("{\"id\": 1}")]
    [InlineData("{\"id\": 1, \"op\": \"explode\", \"number\": 0}")]
    [InlineData("[1, 2]")]
    [InlineData("{\"id\": \"x\", \"op\": \"grant\", \"number\": 0}")]
    [InlineData("{\"id\": 1, \"op\": \"commit\", \"number\": 0, \"writes\": [{\"key\": \"k\", \"value\": \"!!\", \"lease\": 0}]}")]
    [InlineData("not json")]
    public void MalformedRequests_AreProtocolErrors(string json) =>
        Assert.Throws<AgentProtocolException>(() => AgentRequest.Decode(Encoding.UTF8.GetBytes(json)));

    [Fact]
    public async Task Frames_OutOfRangeOrCutShort_AreProtocolErrors_AndACleanEndIsNull()
    {
        var huge = new byte[4];
        BinaryPrimitives.WriteInt32BigEndian(huge, AgentFrames.MaxLength + 1);
        await Assert.ThrowsAsync<AgentProtocolException>(() => AgentFrames.ReadAsync(new MemoryStream(huge), default));
        await Assert.ThrowsAsync<AgentProtocolException>(() => AgentFrames.ReadAsync(new MemoryStream([0, 0]), default));
        await Assert.ThrowsAsync<AgentProtocolException>(() => AgentFrames.ReadAsync(new MemoryStream([0, 0, 0, 9, 1, 2]), default));
        Assert.Null(await AgentFrames.ReadAsync(new MemoryStream([]), default));
        var stream = new MemoryStream();
        await AgentFrames.WriteAsync(stream, new byte[] { 7, 8 }, default);
        stream.Position = 0;
        Assert.Equal(new byte[] { 7, 8 }, await AgentFrames.ReadAsync(stream, default));
    }

    [Fact]
    public async Task TheStoreThroughTheHelper_DoesWhatTheStoreDoes()
    {
        var memory = new MemoryClusterStore();
        var helper = new InProcessHelper(memory);
        using var store = new AgentClusterStore(Settings, _ => helper.Channel());
        var lease = await store.GrantLeaseAsync(5, default);
        Assert.True(lease.Id != 0);
        Assert.Equal(5, lease.TtlSeconds);
        Assert.Equal(10, await store.KeepAliveAsync(lease.Id, default)); // the in-memory store renews to 10 s
        var committed = await store.CommitAsync([new StoreWrite("img/a", [1], lease.Id), new StoreWrite("img/b", [2], lease.Id)], "img/", default);
        Assert.Equal(["img/a", "img/b"], committed.Entries.Select(e => e.Key));
        Assert.Equal(new byte[] { 2 }, committed.Entries[1].Value);
        Assert.Equal(memory.Revision, (await store.ReadAsync("img/", default)).Revision);

        // A watch waits; a change of the waiter's own key does not end it, another key's does.
        long before = memory.Revision;
        var wait = store.WaitForChangeAsync("img/", before, "/mine", default);
        await store.CommitAsync([new StoreWrite("img/x/mine", [1], 0)], null, default);
        Assert.False(wait.IsCompleted);
        await store.CommitAsync([new StoreWrite("img/x/theirs", [1], 0)], null, default);
        Assert.Equal(memory.Revision, await wait.WaitAsync(TimeSpan.FromSeconds(10)));

        await store.RevokeLeaseAsync(lease.Id, default);
        store.Dispose();
        await helper.Served.WaitAsync(TimeSpan.FromSeconds(10)); // its input closed: it ended
    }

    [Fact]
    public async Task ACancelledWait_EndsAtOnce_AndTheHelperServesOn()
    {
        var memory = new MemoryClusterStore();
        var helper = new InProcessHelper(memory);
        using var store = new AgentClusterStore(Settings, _ => helper.Channel());
        using var cancel = new CancellationTokenSource();
        var wait = store.WaitForChangeAsync("img/", memory.Revision, null, cancel.Token);
        cancel.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => wait.WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.Single((await store.CommitAsync([new StoreWrite("img/a", [1], 0)], "img/", default)).Entries);
    }

    [Fact]
    public async Task ManyCallsAtOnce_SomeCancelledAsTheyFinish_AllEnd_AndTheHelperServesOn()
    {
        // Cancellations that cross the helper's own completion of the same call (a cancel frame
        // for a request that has just answered) must neither hang a caller nor end the helper.
        var memory = new MemoryClusterStore();
        var helper = new InProcessHelper(memory);
        using var store = new AgentClusterStore(Settings, _ => helper.Channel());
        var calls = new List<Task>();
        for (int i = 0; i < 300; i++)
        {
            var cancel = new CancellationTokenSource();
            var call = i % 2 == 0
                ? (Task)store.ReadAsync("img/", cancel.Token)
                : store.CommitAsync([new StoreWrite($"img/{i}", [1], 0)], "img/", cancel.Token);
            if (i % 3 == 0) cancel.Cancel();
            calls.Add(call.ContinueWith(_ => cancel.Dispose(), TaskScheduler.Default));
        }
        await Task.WhenAll(calls).WaitAsync(TimeSpan.FromSeconds(30));
        Assert.False(helper.Served.IsCompleted);
        Assert.Equal(memory.Revision, (await store.ReadAsync("img/", default)).Revision);
    }

    [Fact]
    public async Task AnUnreachableStore_IsAnUnavailableStoreOnThisSide()
    {
        var memory = new MemoryClusterStore { Down = true };
        var helper = new InProcessHelper(memory);
        using var store = new AgentClusterStore(Settings, _ => helper.Channel());
        await Assert.ThrowsAsync<ClusterUnavailableException>(() => store.GrantLeaseAsync(5, default));
    }

    [Fact]
    public async Task AHelperThatDies_FailsWhatWaitsAndWhatFollows_AsUnreachableEtcd()
    {
        var memory = new MemoryClusterStore();
        var helper = new InProcessHelper(memory);
        using var store = new AgentClusterStore(Settings, _ => helper.Channel());
        var wait = store.WaitForChangeAsync("img/", memory.Revision, null, default);
        helper.Die();
        var pending = await Assert.ThrowsAsync<ClusterUnavailableException>(() => wait.WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.Equal("etcd unreachable: the etcd helper vdisk-etcd exited with status 0", pending.Message);
        await Assert.ThrowsAsync<ClusterUnavailableException>(() => store.ReadAsync("img/", default));
    }

    [Fact]
    public void AMissingHelper_IsOneLineNamingThePath_AndNothingStartsBeforeTheFirstCall()
    {
        int launches = 0;
        using (new AgentClusterStore(Settings, _ => { launches++; throw new InvalidOperationException(); }))
        {
        }
        Assert.Equal(0, launches);
        using var store = new AgentClusterStore(Settings, s => AgentChannel.StartHelper(s, "/nonexistent/vdisk-etcd"));
        var e = Assert.Throws<ClusterLockException>(() => store.GrantLeaseAsync(5, default).GetAwaiter().GetResult());
        Assert.Equal("cluster locks need vdisk-etcd: /nonexistent/vdisk-etcd: No such file or directory", e.Message);
    }

    /// <summary>A helper's input whose reader is gone: writes fail as a closed pipe's do, and say so.</summary>
    private sealed class BrokenPipeStream(TaskCompletionSource writeFailed) : Stream
    {
        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override Task FlushAsync(CancellationToken cancellationToken) => Task.CompletedTask;
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => Fail();
        public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default) => ValueTask.FromException(Fail());

        private IOException Fail()
        {
            writeFailed.TrySetResult();
            return new IOException("Broken pipe");
        }
    }

    [Fact]
    public async Task AHelperThatEndedBeforeTheFirstRequest_IsReportedByItsExit_NotByTheBrokenPipe()
    {
        // The helper exited before vdisk wrote: the write fails first, and only then does the
        // answer reader see the end of the helper's output (CI's scheduling once did this).
        var writeFailed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var output = new Pipe();
        _ = writeFailed.Task.ContinueWith(_ => output.Writer.Complete(), TaskScheduler.Default);
        using var store = new AgentClusterStore(Settings, _ => new AgentChannel(new BrokenPipeStream(writeFailed), output.Reader.AsStream(),
            () => "exited with status 3", () => { }));
        var e = await Assert.ThrowsAsync<ClusterUnavailableException>(() => store.GrantLeaseAsync(5, default));
        Assert.Equal("etcd unreachable: the etcd helper vdisk-etcd exited with status 3", e.Message);
    }

    [Fact]
    public void HelperArguments_RoundTrip()
    {
        var settings = new ClusterLockSettings
        {
            Endpoints = [new Uri("http://10.0.0.1:2379"), new Uri("https://etcd.example:2379")],
            AttemptTimeout = TimeSpan.FromMilliseconds(1500),
            OperationTimeout = TimeSpan.FromSeconds(9),
        };
        var parsed = AgentArguments.Parse(AgentArguments.Format(settings));
        Assert.Equal(settings.Endpoints, parsed.Endpoints);
        Assert.Equal(settings.AttemptTimeout, parsed.AttemptTimeout);
        Assert.Equal(settings.OperationTimeout, parsed.OperationTimeout);
        Assert.Equal("unrecognized option '--ttl'", Assert.Throws<ArgumentException>(() => AgentArguments.Parse(["--ttl", "5"])).Message);
        Assert.Equal("--endpoints is required", Assert.Throws<ArgumentException>(() => AgentArguments.Parse([])).Message);
    }
}
