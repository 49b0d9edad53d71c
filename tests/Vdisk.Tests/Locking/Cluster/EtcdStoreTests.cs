using System.Net;
using System.Net.Sockets;
using Vdisk.Locking.Cluster;
using Xunit;

namespace Vdisk.Tests.Locking.Cluster;

/// <summary>The etcd client's failures, against endpoints that refuse or never answer (no etcd needed).</summary>
public class EtcdStoreTests
{
    private static ClusterLockSettings Settings(TimeSpan attempt, params string[] endpoints) => new()
    {
        Endpoints = ClusterLockSettings.ParseEndpoints(string.Join(',', endpoints), "test"),
        AttemptTimeout = attempt,
        OperationTimeout = attempt * 3,
    };

    [Fact]
    public async Task EndpointsThatRefuse_FailAtOnce_NamingEachEndpointAndItsError()
    {
        // Deadlines far beyond a refusal, so that only the refusal can end the attempts, however loaded the machine.
        using var store = new EtcdStore(Settings(TimeSpan.FromSeconds(60), "http://127.0.0.1:1", "http://127.0.0.1:2"));
        var e = await Assert.ThrowsAsync<ClusterUnavailableException>(() => store.GrantLeaseAsync(3, CancellationToken.None));
        Assert.Equal("etcd unreachable while granting a lease: http://127.0.0.1:1 (Connection refused), http://127.0.0.1:2 (Connection refused)", e.Message);
    }

    [Fact]
    public async Task AnEndpointThatNeverAnswers_IsAnUnavailableStore_NotACancellation()
    {
        // Accepts connections and says nothing: a member behind a partition.
        using var silent = new TcpListener(IPAddress.Loopback, 0);
        silent.Start();
        var held = new List<Socket>();
        _ = Task.Run(async () =>
        {
            while (true)
            {
                try
                {
                    held.Add(await silent.AcceptSocketAsync());
                }
                catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
                {
                    return;
                }
            }
        });
        string url = $"http://127.0.0.1:{((IPEndPoint)silent.LocalEndpoint).Port}";
        using var store = new EtcdStore(Settings(TimeSpan.FromMilliseconds(300), url));
        var e = await Assert.ThrowsAsync<ClusterUnavailableException>(() => store.GrantLeaseAsync(3, CancellationToken.None));
        Assert.Equal($"etcd unreachable while granting a lease: {url} (no answer within 0.3 s)", e.Message);
        foreach (var s in held) s.Dispose();
    }
}
