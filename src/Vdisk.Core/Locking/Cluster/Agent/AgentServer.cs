using System.Collections.Concurrent;

namespace Vdisk.Locking.Cluster.Agent;

/// <summary>
/// The etcd helper's side of the protocol: reads <see cref="AgentRequest"/> frames, runs each
/// against a store concurrently (a watch must not hold up a renewal), and writes one
/// <see cref="AgentResponse"/> per request in the order they finish. The end of the input is vdisk
/// going away: running requests are cancelled and the loop returns.
/// </summary>
public static class AgentServer
{
    /// <summary>Serves until <paramref name="input"/> ends; the caller disposes the store.</summary>
    /// <exception cref="AgentProtocolException">A frame or request is malformed (vdisk and the helper do not match).</exception>
    public static async Task RunAsync(Stream input, Stream output, IClusterStore store, CancellationToken cancellationToken = default)
    {
        var running = new ConcurrentDictionary<long, CancellationTokenSource>();
        var tasks = new ConcurrentDictionary<Task, bool>();
        using var writeGate = new SemaphoreSlim(1, 1);
        using var stopping = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        try
        {
            while (await AgentFrames.ReadAsync(input, stopping.Token).ConfigureAwait(false) is { } frame)
            {
                var request = AgentRequest.Decode(frame);
                if (request.Operation == AgentOperation.Cancel)
                {
                    if (running.TryGetValue(request.Id, out var target))
                    {
                        try
                        {
                            target.Cancel();
                        }
                        catch (ObjectDisposedException)
                        {
                            // It finished between the lookup and the cancellation: nothing to stop.
                        }
                    }
                    continue;
                }
                var cts = CancellationTokenSource.CreateLinkedTokenSource(stopping.Token);
                if (!running.TryAdd(request.Id, cts)) throw new AgentProtocolException($"request id {request.Id} is already running");
                var task = RunOneAsync(request, store, cts.Token, output, writeGate, running);
                tasks.TryAdd(task, true);
                _ = task.ContinueWith(t => tasks.TryRemove(t, out _), TaskScheduler.Default);
            }
        }
        finally
        {
            await stopping.CancelAsync().ConfigureAwait(false);
            await Task.WhenAll(tasks.Keys).ConfigureAwait(false);
        }
    }

    private static async Task RunOneAsync(AgentRequest request, IClusterStore store, CancellationToken token, Stream output,
        SemaphoreSlim writeGate, ConcurrentDictionary<long, CancellationTokenSource> running)
    {
        await Task.Yield(); // the reader goes on at once
        AgentResponse response;
        try
        {
            response = await CallAsync(request, store, token).ConfigureAwait(false);
        }
        catch (Exception e)
        {
            response = AgentResponse.Failure(request.Id, e);
        }
        finally
        {
            if (running.TryRemove(request.Id, out var cts)) cts.Dispose();
        }
        await writeGate.WaitAsync(CancellationToken.None).ConfigureAwait(false);
        try
        {
            await AgentFrames.WriteAsync(output, response.Encode(), CancellationToken.None).ConfigureAwait(false);
        }
        catch (IOException)
        {
            // vdisk is gone (broken pipe): nobody is waiting for the answer.
        }
        catch (ObjectDisposedException)
        {
        }
        finally
        {
            writeGate.Release();
        }
    }

    private static async Task<AgentResponse> CallAsync(AgentRequest r, IClusterStore store, CancellationToken token)
    {
        switch (r.Operation)
        {
            case AgentOperation.Grant:
                var lease = await store.GrantLeaseAsync(r.Number, token).ConfigureAwait(false);
                return new AgentResponse(r.Id, Number: lease.Id, Ttl: lease.TtlSeconds);
            case AgentOperation.KeepAlive:
                return new AgentResponse(r.Id, Number: await store.KeepAliveAsync(r.Number, token).ConfigureAwait(false));
            case AgentOperation.Revoke:
                await store.RevokeLeaseAsync(r.Number, token).ConfigureAwait(false);
                return new AgentResponse(r.Id);
            case AgentOperation.TimeToLive:
                return new AgentResponse(r.Id, Number: await store.LeaseTimeToLiveAsync(r.Number, token).ConfigureAwait(false));
            case AgentOperation.Commit:
                var committed = await store.CommitAsync(r.Writes ?? [], r.Prefix, token).ConfigureAwait(false);
                return new AgentResponse(r.Id, Revision: committed.Revision, Entries: committed.Entries);
            case AgentOperation.Read:
                var read = await store.ReadAsync(r.Prefix ?? throw new AgentProtocolException("read without a prefix"), token).ConfigureAwait(false);
                return new AgentResponse(r.Id, Revision: read.Revision, Entries: read.Entries);
            case AgentOperation.WaitForChange:
                long changed = await store.WaitForChangeAsync(r.Prefix ?? throw new AgentProtocolException("wait without a prefix"), r.Number,
                    r.IgnoreSuffix, token).ConfigureAwait(false);
                return new AgentResponse(r.Id, Number: changed);
            default:
                throw new AgentProtocolException($"operation {r.Operation} has no result");
        }
    }
}
