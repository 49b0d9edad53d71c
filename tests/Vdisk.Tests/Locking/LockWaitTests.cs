using System.Collections.Concurrent;
using Microsoft.Extensions.Time.Testing;
using Vdisk.Inspection;
using Vdisk.Locking;
using Xunit;

namespace Vdisk.Tests.Locking;

/// <summary>
/// LockWait on a fake clock: every pause it takes is seen and ended by the test, so the retry
/// schedule, the deadline and the announcement are checked exactly, without real time passing.
/// </summary>
public class LockWaitTests
{
    /// <summary>A fake clock that hands each pause LockWait starts to the test, which then ends it with Advance.</summary>
    private sealed class PauseClock : FakeTimeProvider
    {
        private readonly BlockingCollection<TimeSpan> _pauses = new();

        public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
        {
            var timer = base.CreateTimer(callback, state, dueTime, period);
            _pauses.Add(dueTime);
            return timer;
        }

        /// <summary>The next pause LockWait started (waits for it; the real-time limit only guards against a hang).</summary>
        public TimeSpan NextPause()
        {
            Assert.True(_pauses.TryTake(out var pause, TimeSpan.FromSeconds(30)), "LockWait never paused");
            return pause;
        }

        /// <summary>True if LockWait has started a pause that the test has not taken yet.</summary>
        public bool HasPendingPause => _pauses.Count > 0;

        /// <summary>Ends the next pause by moving the clock past it; returns its length.</summary>
        public TimeSpan EndNextPause()
        {
            var pause = NextPause();
            Advance(pause);
            return pause;
        }
    }

    private static LockConflictException Conflict() =>
        new("Failed to get \"write\" lock", "/nonexistent/disk.img", 201, fromTest: true);

    private static readonly TimeSpan Initial = TimeSpan.FromMilliseconds(10);
    private static readonly TimeSpan Max = TimeSpan.FromMilliseconds(200);

    private static LockWaitOptions On(PauseClock clock, TimeSpan? timeout = null, List<LockWaitNotice>? notices = null) => new()
    {
        Timeout = timeout,
        InitialDelay = Initial,
        MaxDelay = Max,
        Waiting = notices is null ? null : notices.Add,
        Time = clock,
    };

    [Fact]
    public async Task Retries_until_the_conflict_clears_and_announces_once()
    {
        var clock = new PauseClock();
        int attempts = 0;
        var notices = new List<LockWaitNotice>();
        var run = LockWait.RunAsync(_ => ++attempts < 5 ? throw Conflict() : Task.FromResult(42), On(clock, notices: notices));
        for (int i = 0; i < 4; i++) clock.EndNextPause();
        Assert.Equal(42, await run);
        Assert.Equal(5, attempts);
        Assert.False(clock.HasPendingPause);
        var notice = Assert.Single(notices);
        Assert.Equal(201, notice.Conflict.Offset);
        Assert.Empty(notice.Blockers); // the file does not exist, so nobody is named
        Assert.Equal("waiting for the holder, which refuses to share \"write\" on '/nonexistent/disk.img' (Failed to get \"write\" lock)", notice.Message);
    }

    [Fact]
    public async Task Pauses_start_at_the_initial_delay_and_double_up_to_the_maximum()
    {
        var clock = new PauseClock();
        int attempts = 0;
        var run = LockWait.RunAsync(_ => ++attempts < 9 ? throw Conflict() : Task.FromResult(0), On(clock));
        var pauses = Enumerable.Range(0, 8).Select(_ => clock.EndNextPause()).ToList();
        await run;
        // Each pause is its step of the doubling plus up to a quarter of jitter, never above the maximum:
        // so an open is admitted at most MaxDelay after the holder leaves.
        double[] steps = [10, 20, 40, 80, 160, 200, 200, 200];
        for (int i = 0; i < steps.Length; i++)
        {
            Assert.InRange(pauses[i].TotalMilliseconds, steps[i], Math.Min(steps[i] * 1.25, Max.TotalMilliseconds));
        }
    }

    [Fact]
    public async Task An_attempt_waits_for_its_pause_to_end()
    {
        var clock = new PauseClock();
        int attempts = 0;
        var run = LockWait.RunAsync(_ => ++attempts < 2 ? throw Conflict() : Task.FromResult(0), On(clock));
        var pause = clock.NextPause();
        clock.Advance(pause - TimeSpan.FromTicks(1));
        Assert.Equal(1, attempts);
        Assert.False(run.IsCompleted);
        clock.Advance(TimeSpan.FromTicks(1));
        await run;
        Assert.Equal(2, attempts);
    }

    [Fact]
    public async Task Gives_up_at_the_deadline_with_the_last_conflict_unchanged()
    {
        var clock = new PauseClock();
        var timeout = TimeSpan.FromSeconds(1);
        var start = clock.GetUtcNow();
        LockConflictException? last = null;
        var run = LockWait.RunAsync<int>(_ =>
        {
            last = Conflict();
            throw last;
        }, On(clock, timeout));
        while (clock.GetUtcNow() - start < timeout) clock.EndNextPause();
        // The last pause is cut to the time left, so the last attempt is made exactly at the deadline.
        Assert.Equal(timeout, clock.GetUtcNow() - start);
        var thrown = await Assert.ThrowsAsync<LockConflictException>(() => run);
        Assert.Same(last, thrown);
        Assert.False(clock.HasPendingPause);
    }

    [Fact]
    public void Zero_timeout_tries_once_and_does_not_announce()
    {
        var clock = new PauseClock();
        int attempts = 0;
        var notices = new List<LockWaitNotice>();
        Assert.Throws<LockConflictException>(() => LockWait.Run<int>(() => { attempts++; throw Conflict(); }, On(clock, TimeSpan.Zero, notices)));
        Assert.Equal(1, attempts);
        Assert.Empty(notices);
        Assert.False(clock.HasPendingPause);
    }

    [Fact]
    public void Failures_other_than_lock_tests_are_not_waited_on()
    {
        var clock = new PauseClock();
        int attempts = 0;
        var lockFailure = new LockConflictException("Failed to lock byte 100", "x", 100, fromTest: false, errno: 11);
        Assert.Same(lockFailure, Assert.Throws<LockConflictException>(() => LockWait.Run<int>(() => { attempts++; throw lockFailure; }, On(clock))));
        Assert.Throws<IOException>(() => LockWait.Run<int>(() => { attempts++; throw new IOException("disk on fire"); }, On(clock)));
        Assert.Equal(2, attempts);
        Assert.False(clock.HasPendingPause);
        Assert.False(LockWait.IsWaitable(new LockConflictException("Failed to get \"write\" lock: Bad file descriptor", "x", 201, fromTest: true, errno: 9)));
    }

    [Fact]
    public async Task Cancellation_ends_an_endless_wait_during_a_pause()
    {
        var clock = new PauseClock();
        using var cts = new CancellationTokenSource();
        int attempts = 0;
        // The synchronous form, on its own thread, since it blocks through the pauses.
        var run = Task.Run(() => LockWait.Run<int>(() => { attempts++; throw Conflict(); }, On(clock), cts.Token));
        clock.EndNextPause();
        clock.NextPause(); // the second pause has begun and the clock is not moved past it
        cts.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => run);
        Assert.Equal(2, attempts);
    }

    [Fact]
    public async Task Cancellation_before_the_first_attempt_opens_nothing()
    {
        using var cts = new CancellationTokenSource();
        cts.Cancel();
        int attempts = 0;
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => LockWait.RunAsync(_ => Task.FromResult(++attempts), On(new PauseClock()), cts.Token));
        Assert.Equal(0, attempts);
    }

    [Fact]
    public void Notice_names_the_blocker_and_what_it_holds()
    {
        var holder = new LockHolder(LockHolderKind.OpenFileDescription, new ProcessDescription(7, "qemu-io", "qemu-io x"), 4, [Vdisk.Tests.Inspection.Fabricate.Lock(KernelLockKind.Ofd, -1, "101")]);
        var notice = new LockWaitNotice(new LockConflictException("Failed to get shared \"write\" lock", "d.qcow2", 101, fromTest: true), [holder]);
        Assert.Equal("waiting for PID 7 (qemu-io) fd 4, which holds \"write\" on 'd.qcow2' (Failed to get shared \"write\" lock)", notice.Message);
    }
}
