namespace Vdisk.Copy;

/// <summary>
/// The <c>-r</c> rate limit of qemu-img convert and commit: callers ask before writing and wait
/// until the bytes written so far fit the rate since the first write. Thread-safe.
/// </summary>
public sealed class RateLimiter(long bytesPerSecond, TimeProvider? time = null)
{
    private readonly TimeProvider _time = time ?? TimeProvider.System;
    private readonly Lock _gate = new();
    private long _granted;
    private long? _start;

    /// <summary>Waits until <paramref name="bytes"/> more may be written (at once when the limit is 0).</summary>
    public async ValueTask WaitAsync(long bytes, CancellationToken ct = default)
    {
        if (bytesPerSecond <= 0) return;
        double dueSeconds;
        long start;
        lock (_gate)
        {
            _start ??= _time.GetTimestamp();
            start = _start.Value;
            dueSeconds = (double)_granted / bytesPerSecond;
            _granted += bytes;
        }
        var wait = TimeSpan.FromSeconds(dueSeconds) - _time.GetElapsedTime(start);
        if (wait > TimeSpan.Zero) await Task.Delay(wait, _time, ct).ConfigureAwait(false);
    }
}
