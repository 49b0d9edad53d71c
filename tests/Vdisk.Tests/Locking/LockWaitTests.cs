using Vdisk.Inspection;
using Vdisk.Locking;
using Xunit;

namespace Vdisk.Tests.Locking;

public class LockWaitTests
{
    private static LockConflictException Conflict() =>
        new("Failed to get \"write\" lock", "/nonexistent/disk.img", 201, fromTest: true);

    private static LockWaitOptions Fast(TimeSpan? timeout, List<LockWaitNotice>? notices = null) => new()
    {
        Timeout = timeout,
        InitialDelay = TimeSpan.FromMilliseconds(1),
        MaxDelay = TimeSpan.FromMilliseconds(4),
        Waiting = notices is null ? null : notices.Add,
    };

    [Fact]
    public void Retries_until_the_conflict_clears_and_announces_once()
    {
        int attempts = 0;
        var notices = new List<LockWaitNotice>();
        int result = LockWait.Run(() => ++attempts < 5 ? throw Conflict() : 42, Fast(null, notices));
        Assert.Equal(42, result);
        Assert.Equal(5, attempts);
        var notice = Assert.Single(notices);
        Assert.Equal(201, notice.Conflict.Offset);
        Assert.Empty(notice.Blockers); // the file does not exist, so nobody is named
        Assert.Equal("waiting for the holder, which refuses to share \"write\" on '/nonexistent/disk.img' (Failed to get \"write\" lock)", notice.Message);
    }

    [Fact]
    public void Gives_up_with_the_last_conflict_unchanged()
    {
        LockConflictException? last = null;
        var thrown = Assert.Throws<LockConflictException>(() =>
            LockWait.Run<int>(() =>
            {
                last = Conflict();
                throw last;
            }, Fast(TimeSpan.FromMilliseconds(30))));
        Assert.Same(last, thrown);
    }

    [Fact]
    public void Zero_timeout_tries_once_and_does_not_announce()
    {
        int attempts = 0;
        var notices = new List<LockWaitNotice>();
        Assert.Throws<LockConflictException>(() => LockWait.Run<int>(() => { attempts++; throw Conflict(); }, Fast(TimeSpan.Zero, notices)));
        Assert.Equal(1, attempts);
        Assert.Empty(notices);
    }

    [Fact]
    public void Failures_other_than_lock_tests_are_not_waited_on()
    {
        int attempts = 0;
        var lockFailure = new LockConflictException("Failed to lock byte 100", "x", 100, fromTest: false, errno: 11);
        Assert.Same(lockFailure, Assert.Throws<LockConflictException>(() => LockWait.Run<int>(() => { attempts++; throw lockFailure; }, Fast(null))));
        Assert.Throws<IOException>(() => LockWait.Run<int>(() => { attempts++; throw new IOException("disk on fire"); }, Fast(null)));
        Assert.Equal(2, attempts);
        Assert.False(LockWait.IsWaitable(new LockConflictException("Failed to get \"write\" lock: Bad file descriptor", "x", 201, fromTest: true, errno: 9)));
    }

    [Fact]
    public void Cancellation_ends_an_endless_wait()
    {
        using var cts = new CancellationTokenSource();
        int attempts = 0;
        Assert.ThrowsAny<OperationCanceledException>(() => LockWait.Run<int>(() =>
        {
            if (++attempts == 3) cts.Cancel();
            throw Conflict();
        }, Fast(null), cts.Token));
        Assert.Equal(3, attempts);
    }

    [Fact]
    public async Task Async_form_retries_and_cancels()
    {
        int attempts = 0;
        Assert.Equal("ok", await LockWait.RunAsync(_ => ++attempts < 3 ? throw Conflict() : Task.FromResult("ok"), Fast(null)));
        using var cts = new CancellationTokenSource();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => LockWait.RunAsync<int>(_ =>
        {
            cts.Cancel();
            throw Conflict();
        }, Fast(null), cts.Token));
    }

    [Fact]
    public void Notice_names_the_blocker_and_what_it_holds()
    {
        var holder = new LockHolder(LockHolderKind.OpenFileDescription, new ProcessDescription(7, "qemu-io", "qemu-io x"), 4, [Vdisk.Tests.Inspection.Fabricate.Lock(KernelLockKind.Ofd, -1, "101")]);
        var notice = new LockWaitNotice(new LockConflictException("Failed to get shared \"write\" lock", "d.qcow2", 101, fromTest: true), [holder]);
        Assert.Equal("waiting for PID 7 (qemu-io) fd 4, which holds \"write\" on 'd.qcow2' (Failed to get shared \"write\" lock)", notice.Message);
    }
}
