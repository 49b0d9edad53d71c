using Vdisk.Inspection;
using Vdisk.Permissions;

namespace Vdisk.Locking;

/// <summary>How long and how to wait for a lock conflict to clear.</summary>
public sealed record LockWaitOptions
{
    /// <summary>How long to keep trying; null waits until the conflict clears or the wait is cancelled.</summary>
    public TimeSpan? Timeout { get; init; }

    /// <summary>The first pause between attempts; it doubles up to <see cref="MaxDelay"/>.</summary>
    public TimeSpan InitialDelay { get; init; } = TimeSpan.FromMilliseconds(10);

    /// <summary>The longest pause between attempts, which bounds how late an open is admitted after the holder leaves.</summary>
    public TimeSpan MaxDelay { get; init; } = TimeSpan.FromMilliseconds(200);

    /// <summary>Called once, when the first attempt fails and waiting begins.</summary>
    public Action<LockWaitNotice>? Waiting { get; init; }

    /// <summary>Names the holders in the notice; null uses a default <see cref="LockInspector"/>.</summary>
    public LockInspector? Inspector { get; init; }

    /// <summary>The clock the deadline and the pauses follow (a fake one in tests).</summary>
    public TimeProvider Time { get; init; } = TimeProvider.System;
}

/// <summary>What a waiting open is waiting for.</summary>
/// <param name="Conflict">The error the open got.</param>
/// <param name="Blockers">The holders whose locks cover the byte that failed the test (empty when none is visible any more).</param>
public sealed record LockWaitNotice(LockConflictException Conflict, IReadOnlyList<LockHolder> Blockers)
{
    /// <summary>
    /// One line for humans, e.g. <c>waiting for PID 4242 (qemu-system-x86_64) fd 12, which refuses to
    /// share "write" on 'disk.img' (Failed to get "write" lock)</c>.
    /// </summary>
    public string Message
    {
        get
        {
            string who = Blockers.Count switch
            {
                0 => "the holder",
                1 => Blockers[0].Describe(),
                _ => $"{Blockers[0].Describe()} and {Blockers.Count - 1} other holder(s)",
            };
            string what = LockBytes.Decode(Conflict.Offset) is { } d
                ? (d.Unshared ? $"which refuses to share \"{BlockPermissions.Name(d.Permission)}\"" : $"which holds \"{BlockPermissions.Name(d.Permission)}\"")
                : "which holds a conflicting lock";
            return $"waiting for {who}, {what} on '{Conflict.Filename}' ({Conflict.Message})";
        }
    }
}

/// <summary>
/// Opening that queues instead of failing: on a lock conflict (another process refuses what the
/// open takes, or holds what it refuses), retry with a doubling pause until the conflict clears,
/// the time runs out or the wait is cancelled. Every verb that opens images goes through here.
/// QEMU itself never waits; this is vdisk's opt-in addition and invisible to other processes
/// apart from the brief read locks each attempt takes.
/// </summary>
public static class LockWait
{
    /// <summary>
    /// True for the failures that can clear by themselves: a lock test that found another
    /// holder. Syscall failures and in-process permission conflicts are not waited on.
    /// </summary>
    public static bool IsWaitable(Exception e) => e is LockConflictException { FromTest: true, Errno: 0 };

    /// <summary>
    /// Runs <paramref name="open"/> until it does not fail with a waitable conflict. When the time
    /// runs out, the last conflict is rethrown unchanged, so callers report it as they would
    /// without waiting.
    /// </summary>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled while waiting.</exception>
    public static T Run<T>(Func<T> open, LockWaitOptions options, CancellationToken cancellationToken = default) =>
        RunAsync(_ => Task.FromResult(open()), options, cancellationToken).GetAwaiter().GetResult();

    /// <summary>The asynchronous form of <see cref="Run{T}"/>: the pauses do not hold a thread.</summary>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled while waiting.</exception>
    public static async Task<T> RunAsync<T>(Func<CancellationToken, Task<T>> open, LockWaitOptions options, CancellationToken cancellationToken = default)
    {
        long started = options.Time.GetTimestamp();
        var delay = options.InitialDelay;
        bool announced = false;
        while (true)
        {
            cancellationToken.ThrowIfCancellationRequested();
            try
            {
                return await open(cancellationToken).ConfigureAwait(false);
            }
            catch (LockConflictException e) when (IsWaitable(e))
            {
                var pause = NextPause(options, options.Time.GetElapsedTime(started), ref delay);
                if (pause is null) throw;
                if (!announced)
                {
                    announced = true;
                    Announce(e, options);
                }
                if (e.Detail?.WaitForChange is { } change) await WaitForChangeAsync(change, options, options.Time.GetElapsedTime(started), cancellationToken).ConfigureAwait(false);
                else await Task.Delay(pause.Value, options.Time, cancellationToken).ConfigureAwait(false);
            }
        }
    }

    /// <summary>The next pause, or null when the time is up. Jitter keeps two waiters from retrying in lockstep.</summary>
    private static TimeSpan? NextPause(LockWaitOptions options, TimeSpan elapsed, ref TimeSpan delay)
    {
        var pause = delay + TimeSpan.FromMilliseconds(Random.Shared.Next(0, Math.Max(1, (int)(delay.TotalMilliseconds / 4))));
        if (pause > options.MaxDelay) pause = options.MaxDelay;
        delay = delay * 2 > options.MaxDelay ? options.MaxDelay : delay * 2;
        if (options.Timeout is { } limit)
        {
            var left = limit - elapsed;
            if (left <= TimeSpan.Zero) return null;
            if (pause > left) pause = left;
        }
        return pause;
    }

    /// <summary>
    /// A conflict that can tell when it may have cleared (cluster locks: an etcd watch on the
    /// image's keys) is waited on that way, within what is left of the timeout, instead of polling.
    /// </summary>
    private static async Task WaitForChangeAsync(Func<CancellationToken, Task> change, LockWaitOptions options, TimeSpan elapsed, CancellationToken cancellationToken)
    {
        var left = options.Timeout is { } limit ? (limit - elapsed > TimeSpan.Zero ? limit - elapsed : TimeSpan.Zero) : Timeout.InfiniteTimeSpan;
        using var timer = new CancellationTokenSource(left, options.Time);
        using var bounded = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, timer.Token);
        try
        {
            await change(bounded.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            // The time is up: the next attempt fails once more and is reported as it is.
        }
    }

    private static void Announce(LockConflictException e, LockWaitOptions options)
    {
        if (options.Waiting is null) return;
        IReadOnlyList<LockHolder> blockers;
        try
        {
            blockers = e.Detail?.Holders ?? (options.Inspector ?? new LockInspector()).HoldersOf(e.Filename, e.Offset);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            blockers = [];
        }
        options.Waiting(new LockWaitNotice(e, blockers));
    }
}
