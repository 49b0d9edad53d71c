using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Etcdserverpb;
using Grpc.Net.Client;

namespace Vdisk.Interop.Cluster;

/// <summary>
/// A real etcd cluster on loopback (Debian's etcd-server), started and stopped by the tests:
/// each member its own process, data directory (on tmpfs when there is one, so fsync is cheap on
/// a shared 2-core machine) and free ports picked at run time, a cluster token unique to the run.
/// Members are stopped by PID and their directories deleted.
/// </summary>
public sealed class EtcdCluster : IDisposable
{
    private readonly Member[] _members;
    private readonly string _root;

    private sealed class Member
    {
        public required string Name;
        public required int ClientPort;
        public required int PeerPort;
        public required string DataDir;
        public Process? Process;
        public Uri ClientUrl => new($"http://127.0.0.1:{ClientPort}");
        public string ClientText => $"http://127.0.0.1:{ClientPort}";
    }

    private EtcdCluster(int size)
    {
        string tmp = Directory.Exists("/dev/shm") ? "/dev/shm" : Path.GetTempPath();
        _root = Directory.CreateTempSubdirectory("vdisk-etcd-").FullName;
        if (tmp == "/dev/shm")
        {
            Directory.Delete(_root);
            _root = Path.Combine(tmp, Path.GetFileName(_root));
            Directory.CreateDirectory(_root);
        }
        var ports = FreePorts(size * 2);
        _members = Enumerable.Range(0, size).Select(i => new Member
        {
            Name = "m" + i.ToString(CultureInfo.InvariantCulture),
            ClientPort = ports[2 * i],
            PeerPort = ports[2 * i + 1],
            DataDir = Path.Combine(_root, "m" + i.ToString(CultureInfo.InvariantCulture)),
        }).ToArray();
    }

    /// <summary>Starts <paramref name="size"/> members and waits until every one reports healthy.</summary>
    public static EtcdCluster Start(int size = 3)
    {
        var cluster = new EtcdCluster(size);
        try
        {
            foreach (var m in cluster._members) cluster.Launch(m);
            cluster.WaitHealthy(TimeSpan.FromSeconds(60));
            return cluster;
        }
        catch
        {
            cluster.Dispose();
            throw;
        }
    }

    /// <summary>The client URLs of the members still running, comma-separated (VDISK_ETCD_ENDPOINTS).</summary>
    public string Endpoints => string.Join(',', _members.Select(m => m.ClientText));

    /// <summary>The client URL of one member.</summary>
    public Uri Endpoint(int member) => _members[member].ClientUrl;

    /// <summary>The number of members.</summary>
    public int Size => _members.Length;

    private void Launch(Member m)
    {
        string initial = string.Join(',', _members.Select(x => $"{x.Name}=http://127.0.0.1:{x.PeerPort}"));
        var start = new ProcessStartInfo("etcd")
        {
            RedirectStandardError = true,
            RedirectStandardOutput = true,
            UseShellExecute = false,
        };
        foreach (var a in new[]
        {
            "--name", m.Name, "--data-dir", m.DataDir,
            "--listen-client-urls", m.ClientText, "--advertise-client-urls", m.ClientText,
            "--listen-peer-urls", $"http://127.0.0.1:{m.PeerPort}", "--initial-advertise-peer-urls", $"http://127.0.0.1:{m.PeerPort}",
            "--initial-cluster", initial, "--initial-cluster-state", "new", "--initial-cluster-token", Path.GetFileName(_root),
            "--log-level", "error", "--logger", "zap",
        })
        {
            start.ArgumentList.Add(a);
        }
        var p = Process.Start(start)!;
        // Drain the pipes so a chatty member never blocks on a full pipe.
        p.OutputDataReceived += (_, _) => { };
        p.ErrorDataReceived += (_, _) => { };
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        m.Process = p;
    }

    private void WaitHealthy(TimeSpan limit)
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(2) };
        var watch = Stopwatch.StartNew();
        foreach (var m in _members)
        {
            while (true)
            {
                if (m.Process!.HasExited) throw new InvalidOperationException($"etcd member {m.Name} exited with {m.Process.ExitCode}");
                try
                {
                    string body = http.GetStringAsync(new Uri(m.ClientUrl, "/health")).GetAwaiter().GetResult();
                    if (body.Contains("\"health\":\"true\"", StringComparison.Ordinal)) break;
                }
                catch (Exception e) when (e is HttpRequestException or TaskCanceledException)
                {
                }
                if (watch.Elapsed > limit) throw new TimeoutException($"etcd member {m.Name} did not become healthy");
                Thread.Sleep(50);
            }
        }
    }

    /// <summary>The index of the member that is leader now (asks each running member), or -1.</summary>
    public int Leader()
    {
        for (int i = 0; i < _members.Length; i++)
        {
            if (_members[i].Process is not { HasExited: false }) continue;
            try
            {
                using var channel = GrpcChannel.ForAddress(_members[i].ClientUrl);
                var status = new Maintenance.MaintenanceClient(channel).Status(new StatusRequest(), deadline: DateTime.UtcNow.AddSeconds(2));
                if (status.Leader == status.Header.MemberId) return i;
            }
            catch (Grpc.Core.RpcException)
            {
            }
        }
        return -1;
    }

    /// <summary>kill -9 of one member.</summary>
    public void Kill(int member)
    {
        var p = _members[member].Process;
        if (p is null || p.HasExited) return;
        p.Kill();
        p.WaitForExit();
    }

    private static int[] FreePorts(int count)
    {
        var listeners = Enumerable.Range(0, count).Select(_ =>
        {
            var l = new TcpListener(IPAddress.Loopback, 0);
            l.Start();
            return l;
        }).ToList();
        var ports = listeners.Select(l => ((IPEndPoint)l.LocalEndpoint).Port).ToArray();
        foreach (var l in listeners) l.Stop();
        return ports;
    }

    public void Dispose()
    {
        foreach (var m in _members)
        {
            try
            {
                if (m.Process is { HasExited: false } p)
                {
                    p.Kill();
                    p.WaitForExit();
                }
            }
            catch (InvalidOperationException)
            {
            }
            m.Process?.Dispose();
        }
        try
        {
            Directory.Delete(_root, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
