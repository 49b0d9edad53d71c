namespace Vdisk.Drivers.Throttle;

/// <summary>
/// A throttle group (block/throttle-groups.c): one <see cref="ThrottleState"/> shared by its
/// members (the throttle nodes naming it). A request that must wait, or that finds earlier
/// requests of its direction waiting, queues in its member's FIFO; one timer per direction is
/// armed in the whole group at a time, and when it fires the next request goes, taking turns
/// between the members that have requests waiting (round-robin, as QEMU's tokens do).
/// </summary>
public sealed class ThrottleGroup
{
    private readonly object _lock = new();
    private readonly TimeProvider _time;
    private readonly long _epoch;
    private readonly ThrottleState _state = new();

    // QLIST_INSERT_HEAD: the newest member first, the round-robin order QEMU walks.
    private readonly List<ThrottleGroupMember> _members = new();
    private readonly ThrottleGroupMember?[] _tokens = new ThrottleGroupMember?[2];
    private readonly bool[] _anyTimerArmed = new bool[2];

    /// <summary>A group named <paramref name="name"/> with <paramref name="config"/> (validated by the caller), timed by <paramref name="time"/>.</summary>
    public ThrottleGroup(string name, ThrottleConfig config, TimeProvider time)
    {
        Name = name;
        _time = time;
        _epoch = time.GetTimestamp();
        _state.Configure(config, NowNs);
    }

    /// <summary>The group's name (its object id).</summary>
    public string Name { get; }

    /// <summary>The configured limits (without levels).</summary>
    public ThrottleConfig Limits
    {
        get
        {
            lock (_lock) return _state.Config.Clone();
        }
    }

    /// <summary>How many nodes use the group.</summary>
    public int MemberCount
    {
        get
        {
            lock (_lock) return _members.Count;
        }
    }

    /// <summary>The clock the group's timers run on.</summary>
    internal TimeProvider TimeProvider => _time;

    private long NowNs => _time.GetElapsedTime(_epoch).Ticks * 100;

    /// <summary>throttle_group_register_tgm: a new member, first in the round-robin order.</summary>
    public ThrottleGroupMember Register()
    {
        var member = new ThrottleGroupMember(this);
        lock (_lock)
        {
            _members.Insert(0, member);
            for (int i = 0; i < 2; i++) _tokens[i] ??= member;
        }
        return member;
    }

    /// <summary>throttle_group_unregister_tgm: the member leaves (its requests have finished); its turn passes on.</summary>
    internal void Unregister(ThrottleGroupMember member)
    {
        lock (_lock)
        {
            if (!_members.Contains(member)) return;
            for (int i = 0; i < 2; i++)
            {
                if (_tokens[i] != member) continue;
                var next = Next(member);
                _tokens[i] = next == member ? null : next;
            }
            _members.Remove(member);
            member.DisposeTimers();
            // QEMU drains a node before it leaves (limits off): whatever still waits goes now.
            for (int i = 0; i < 2; i++)
            {
                while (member.Release(i)) { }
            }
        }
    }

    /// <summary>
    /// throttle_group_co_io_limits_intercept: returns when a request of <paramref name="bytes"/>
    /// may go, after the requests of its direction queued before it; accounts it and lets the
    /// next waiting request go when the limits allow.
    /// </summary>
    internal async ValueTask InterceptAsync(ThrottleGroupMember member, long bytes, bool isWrite, CancellationToken cancellationToken)
    {
        int direction = isWrite ? 1 : 0;
        LinkedListNode<TaskCompletionSource>? waiter = null;
        lock (_lock)
        {
            var token = NextToken(member, direction);
            bool mustWait = ScheduleTimer(token, direction);
            if (mustWait || member.Pending[direction] > 0)
            {
                member.Pending[direction]++;
                waiter = member.Queues[direction].AddLast(new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously));
            }
        }
        if (waiter is not null)
        {
            using (cancellationToken.Register(() => Cancel(member, direction, waiter)))
                await waiter.Value.Task.ConfigureAwait(false);
        }
        lock (_lock)
        {
            if (waiter is not null) member.Pending[direction]--;
            // Let go by the member's departure: nothing to account, nobody to schedule for.
            if (!_members.Contains(member)) return;
            _state.Account(isWrite, (ulong)bytes);
            ScheduleNext(member, direction);
        }
    }

    /// <summary>A waiting request's cancellation: it leaves the queue unless it was already let go.</summary>
    private void Cancel(ThrottleGroupMember member, int direction, LinkedListNode<TaskCompletionSource> waiter)
    {
        lock (_lock)
        {
            if (waiter.List is null) return;
            member.Queues[direction].Remove(waiter);
            member.Pending[direction]--;
        }
        waiter.Value.TrySetCanceled();
    }

    /// <summary>throttle_group_next_tgm: the member after <paramref name="member"/>, wrapping around.</summary>
    private ThrottleGroupMember Next(ThrottleGroupMember member) => _members[(_members.IndexOf(member) + 1) % _members.Count];

    /// <summary>
    /// next_throttle_token: the member whose turn it is after the current token's, skipping those
    /// with nothing waiting; <paramref name="member"/> itself when nobody waits.
    /// </summary>
    private ThrottleGroupMember NextToken(ThrottleGroupMember member, int direction)
    {
        var start = _tokens[direction] ?? member;
        var token = Next(start);
        while (token != start && token.Pending[direction] == 0) token = Next(token);
        if (token == start && token.Pending[direction] == 0) token = member;
        return token;
    }

    /// <summary>
    /// throttle_group_schedule_timer: whether the next request must wait. The group's timer for
    /// the direction is armed on <paramref name="token"/> when the limits say so; while one is
    /// armed, everyone waits.
    /// </summary>
    private bool ScheduleTimer(ThrottleGroupMember token, int direction)
    {
        if (_anyTimerArmed[direction]) return true;
        long wait = _state.ComputeWait(direction == 1, NowNs);
        if (wait == 0) return false;
        token.ArmTimer(direction, wait, TimerFired);
        _tokens[direction] = token;
        _anyTimerArmed[direction] = true;
        return true;
    }

    /// <summary>
    /// schedule_next_request: after a request went, the next member with a waiting request (in
    /// turn) gets a timer, or goes at once when the limits allow, <paramref name="member"/>'s own
    /// queue first.
    /// </summary>
    private void ScheduleNext(ThrottleGroupMember member, int direction)
    {
        var token = NextToken(member, direction);
        if (token.Pending[direction] == 0) return;
        if (ScheduleTimer(token, direction)) return;
        if (member.Release(direction))
        {
            token = member;
        }
        else
        {
            // timer_mod(now): the other member's request goes from its timer, outside this lock.
            token.ArmTimer(direction, 0, TimerFired);
            _anyTimerArmed[direction] = true;
        }
        _tokens[direction] = token;
    }

    /// <summary>timer_cb and throttle_group_restart_queue: the member's next request goes, or the turn passes on.</summary>
    private void TimerFired(ThrottleGroupMember member, int direction)
    {
        lock (_lock)
        {
            _anyTimerArmed[direction] = false;
            member.TimerDue[direction] = false;
            if (!_members.Contains(member)) return;
            if (!member.Release(direction)) ScheduleNext(member, direction);
        }
    }
}

/// <summary>
/// One user of a <see cref="ThrottleGroup"/> (ThrottleGroupMember): its queues of waiting reads
/// and writes and its two timers.
/// </summary>
public sealed class ThrottleGroupMember : IDisposable
{
    private readonly ITimer?[] _timers = new ITimer?[2];
    private readonly TimeProvider _time;

    internal ThrottleGroupMember(ThrottleGroup group)
    {
        Group = group;
        _time = group.TimeProvider;
    }

    /// <summary>The group.</summary>
    public ThrottleGroup Group { get; }

    /// <summary>Waiting requests per direction (read 0, write 1), oldest first.</summary>
    internal LinkedList<TaskCompletionSource>[] Queues { get; } = [new(), new()];

    /// <summary>Requests per direction that queued and have not gone yet (let go ones included until they run).</summary>
    internal int[] Pending { get; } = new int[2];

    /// <summary>Whether the direction's timer is armed.</summary>
    internal bool[] TimerDue { get; } = new bool[2];

    /// <summary>Waits until a read or write of <paramref name="bytes"/> may go, then accounts it.</summary>
    public ValueTask InterceptAsync(long bytes, bool isWrite, CancellationToken cancellationToken = default) =>
        Group.InterceptAsync(this, bytes, isWrite, cancellationToken);

    /// <summary>Lets the oldest waiting request of the direction go; false when none waits.</summary>
    internal bool Release(int direction)
    {
        var queue = Queues[direction];
        if (queue.First is not { } first) return false;
        queue.RemoveFirst();
        first.Value.TrySetResult();
        return true;
    }

    /// <summary>throttle_schedule_timer's timer_mod: arms the direction's timer unless it already is.</summary>
    internal void ArmTimer(int direction, long delayNs, Action<ThrottleGroupMember, int> fired)
    {
        if (TimerDue[direction]) return;
        TimerDue[direction] = true;
        if (delayNs == 0)
        {
            // Due now: run from the thread pool, never inside the caller's lock.
            ThreadPool.UnsafeQueueUserWorkItem(_ => fired(this, direction), null);
            return;
        }
        var timer = _timers[direction] ??= _time.CreateTimer(_ => fired(this, direction), null, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
        // Rounded up to the timer's 100 ns ticks, so it never fires before the buckets allow.
        timer.Change(TimeSpan.FromTicks((delayNs + 99) / 100), Timeout.InfiniteTimeSpan);
    }

    internal void DisposeTimers()
    {
        for (int i = 0; i < 2; i++)
        {
            _timers[i]?.Dispose();
            _timers[i] = null;
        }
    }

    /// <summary>Leaves the group.</summary>
    public void Dispose() => Group.Unregister(this);
}
