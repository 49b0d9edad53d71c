namespace Vdisk.Copy;

/// <summary>
/// Lets numbered requests write strictly in order (qemu-img convert without -W): request N
/// waits until request N-1 has completed its turn. Keeping writes sequential is what gives a
/// qcow2 target clusters in guest order, the same layout qemu-img produces.
/// </summary>
public sealed class WriteTurns
{
    private readonly Lock _gate = new();
    private readonly Dictionary<long, TaskCompletionSource> _waiting = new();
    private long _current;

    /// <summary>The turn that may write now.</summary>
    public long Current
    {
        get
        {
            lock (_gate) return _current;
        }
    }

    /// <summary>Completes when it is <paramref name="turn"/>'s turn.</summary>
    public ValueTask WaitAsync(long turn, CancellationToken cancellationToken = default)
    {
        TaskCompletionSource waiter;
        lock (_gate)
        {
            if (turn == _current) return ValueTask.CompletedTask;
            if (turn < _current) throw new InvalidOperationException($"Turn {turn} has already passed");
            if (!_waiting.TryGetValue(turn, out waiter!))
            {
                waiter = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                _waiting.Add(turn, waiter);
            }
        }
        return new ValueTask(waiter.Task.WaitAsync(cancellationToken));
    }

    /// <summary>Ends <paramref name="turn"/> (which must be the current one) and wakes the next.</summary>
    public void Complete(long turn)
    {
        TaskCompletionSource? next;
        lock (_gate)
        {
            if (turn != _current) throw new InvalidOperationException($"Turn {turn} completed out of order (current: {_current})");
            _current++;
            _waiting.Remove(_current, out next);
        }
        next?.SetResult();
    }
}
