using System.Globalization;

namespace Vdisk.Interop.Cluster;

/// <summary>
/// Counters from the members' Prometheus endpoints (<c>/metrics</c>), summed over the cluster:
/// how many requests of a kind etcd served, whichever member a client talked to.
/// </summary>
public sealed class EtcdMetrics(EtcdCluster cluster)
{
    private static readonly HttpClient s_http = new() { Timeout = TimeSpan.FromSeconds(5) };

    /// <summary>The sum of every sample of <paramref name="metric"/> whose labels contain <paramref name="label"/>.</summary>
    public long Sum(string metric, string label)
    {
        double total = 0;
        for (int i = 0; i < cluster.Size; i++)
        {
            string text;
            try
            {
                text = s_http.GetStringAsync(new Uri(cluster.Endpoint(i), "/metrics")).GetAwaiter().GetResult();
            }
            catch (Exception e) when (e is HttpRequestException or TaskCanceledException)
            {
                continue; // a stopped member
            }
            foreach (var line in text.Split('\n'))
            {
                if (!line.StartsWith(metric + "{", StringComparison.Ordinal) || !line.Contains(label, StringComparison.Ordinal)) continue;
                total += double.Parse(line[(line.LastIndexOf(' ') + 1)..], NumberStyles.Float, CultureInfo.InvariantCulture);
            }
        }
        return (long)total;
    }
}
