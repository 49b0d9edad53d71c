using Vdisk.Copy;
using Xunit;

namespace Vdisk.Tests.Copy;

public class WriteTurnsTests
{
    [Fact]
    public async Task Turns_run_in_order_whatever_order_they_arrive_in()
    {
        var turns = new WriteTurns();
        var order = new List<long>();
        var tasks = new[] { 3L, 1, 4, 0, 2 }.Select(turn => Task.Run(async () =>
        {
            await turns.WaitAsync(turn);
            lock (order) order.Add(turn);
            turns.Complete(turn);
        })).ToArray();
        await Task.WhenAll(tasks);
        Assert.Equal([0L, 1, 2, 3, 4], order);
        Assert.Equal(5, turns.Current);
    }

    [Fact]
    public async Task A_waiter_is_released_only_when_the_turn_before_it_completes()
    {
        var turns = new WriteTurns();
        var second = turns.WaitAsync(1).AsTask();
        Assert.False(second.IsCompleted);
        await turns.WaitAsync(0);
        Assert.False(second.IsCompleted);
        turns.Complete(0);
        await second;
    }

    [Fact]
    public void Completing_out_of_turn_or_waiting_for_a_past_turn_is_a_bug()
    {
        var turns = new WriteTurns();
        Assert.Throws<InvalidOperationException>(() => turns.Complete(1));
        turns.Complete(0);
        Assert.Throws<InvalidOperationException>(() => turns.WaitAsync(0));
    }

    [Fact]
    public async Task Waiting_can_be_cancelled()
    {
        var turns = new WriteTurns();
        using var cts = new CancellationTokenSource();
        var waiting = turns.WaitAsync(2, cts.Token).AsTask();
        cts.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => waiting);
    }
}
