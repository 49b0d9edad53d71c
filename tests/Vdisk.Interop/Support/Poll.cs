using Xunit;

namespace Vdisk.Interop.Support;

/// <summary>
/// Waiting for what a test can observe (a file, a lock, a line of output), with a deadline,
/// never for a fixed time.
/// </summary>
public static class Poll
{
    private static readonly TimeSpan s_defaultTimeout = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan s_defaultInterval = TimeSpan.FromMilliseconds(10);

    /// <summary>
    /// Returns once <paramref name="condition"/> holds; fails the test with
    /// <paramref name="failure"/> when it has not by <paramref name="timeout"/> (30 s). The
    /// message is made at the deadline, so it can show the state the test gave up on.
    /// </summary>
    public static void Until(Func<bool> condition, Func<string> failure, TimeSpan? timeout = null, TimeSpan? interval = null)
    {
        var deadline = DateTime.UtcNow + (timeout ?? s_defaultTimeout);
        while (!condition())
        {
            if (DateTime.UtcNow > deadline) Assert.Fail(failure());
            Thread.Sleep(interval ?? s_defaultInterval);
        }
    }
}
