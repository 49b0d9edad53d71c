namespace Vdisk.Server.Exports;

/// <summary>
/// Counts an export's requests in flight and can close behind them (QEMU's drained section):
/// <see cref="CloseAsync"/> completes once every request that entered has left, and requests
/// arriving meanwhile wait until <see cref="Reopen"/>. Used around node (in)activation, so that
/// no write reaches an image after its locks were handed over.
/// </summary>
internal sealed class RequestGate
{
    private readonly Lock _lock = new();
    private int _inFlight;
    private TaskCompletionSource? _reopened;
    private TaskCompletionSource? _idle;

    /// <summary>Requests currently inside.</summary>
    public int InFlight
    {
        get
        {
            lock (_lock) return _inFlight;
        }
    }

    /// <summary>Enters, waiting while the gate is closed.</summary>
    public ValueTask EnterAsync(CancellationToken cancellationToken)
    {
        Task wait;
        lock (_lock)
        {
            if (_reopened is null)
            {
                _inFlight++;
                return ValueTask.CompletedTask;
            }
            wait = _reopened.Task;
        }
        return EnterAfterAsync(wait, cancellationToken);
    }

    private async ValueTask EnterAfterAsync(Task wait, CancellationToken cancellationToken)
    {
        await wait.WaitAsync(cancellationToken).ConfigureAwait(false);
        await EnterAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Leaves.</summary>
    public void Exit()
    {
        TaskCompletionSource? idle = null;
        lock (_lock)
        {
            if (--_inFlight == 0 && _idle is not null)
            {
                idle = _idle;
                _idle = null;
            }
        }
        idle?.TrySetResult();
    }

    /// <summary>Stops new requests and waits for those inside. Calls nest: each needs a <see cref="Reopen"/>.</summary>
    public Task CloseAsync()
    {
        lock (_lock)
        {
            _reopened ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _closeDepth++;
            if (_inFlight == 0) return Task.CompletedTask;
            _idle ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            return _idle.Task;
        }
    }

    private int _closeDepth;

    /// <summary>Lets waiting and new requests in again.</summary>
    public void Reopen()
    {
        TaskCompletionSource? reopened = null;
        lock (_lock)
        {
            if (_closeDepth == 0 || --_closeDepth > 0) return;
            reopened = _reopened;
            _reopened = null;
        }
        reopened?.TrySetResult();
    }
}
