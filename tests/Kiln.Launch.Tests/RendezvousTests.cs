using System.Text;
using Kiln.Launch.Rendezvous;

namespace Kiln.Launch.Tests;

/// <summary>Rounds, late joiners, heartbeats and the job-wide restart budget of the rendezvous over one store.</summary>
public sealed class RendezvousTests
{
    private static RendezvousSettings Settings(int min, int max, double lastCall = 0.3, double heartbeat = 1, int maxRestarts = 0) => new()
    {
        RunId = "r",
        MinNodes = min,
        MaxNodes = max,
        LastCallTimeout = TimeSpan.FromSeconds(lastCall),
        HeartbeatTimeout = TimeSpan.FromSeconds(heartbeat),
        JoinTimeout = TimeSpan.FromSeconds(10),
        MaxRestarts = maxRestarts,
    };

    [Fact]
    public async Task ThreeNodes_AtMax_CloseAtOnce_WithDistinctRanksAndOneMaster()
    {
        var store = new MemoryKeyValueStore();
        RendezvousRound[] rounds = await Task.WhenAll(Enumerable.Range(0, 3).Select(i =>
            new ElasticRendezvous(store, Settings(2, 3, lastCall: 30), $"n{i}").NextRoundAsync(CancellationToken.None))).WaitAsync(TimeSpan.FromSeconds(5));

        rounds.Select(r => r.GroupRank).Order().ShouldBe([0, 1, 2]);
        rounds.ShouldAllBe(r => r.GroupWorldSize == 3 && r.Round == 0 && r.RestartCount == 0);
        rounds.Select(r => (r.MasterAddress, r.MasterPort)).Distinct().Count().ShouldBe(1);
        rounds[0].Participants.ShouldBe(rounds[1].Participants);
    }

    [Fact]
    public async Task LateNode_WaitsAndIsAdmittedByTheNextRound()
    {
        var store = new MemoryKeyValueStore();
        using var beats = new CancellationTokenSource();
        // A last call long enough for the late node to see the new round before it closes on a loaded machine.
        var a = new ElasticRendezvous(store, Settings(2, 3, lastCall: 1.5), "a");
        var b = new ElasticRendezvous(store, Settings(2, 3, lastCall: 1.5), "b");
        var c = new ElasticRendezvous(store, Settings(2, 3, lastCall: 1.5), "c");
        // Live nodes beat; without beats a slow round would (rightly) take them for lost.
        Task[] heartbeats = [a.RunHeartbeatsAsync(beats.Token), b.RunHeartbeatsAsync(beats.Token), c.RunHeartbeatsAsync(beats.Token)];
        RendezvousRound[] first = await Task.WhenAll(a.NextRoundAsync(default), b.NextRoundAsync(default)).WaitAsync(TimeSpan.FromSeconds(5));
        first.ShouldAllBe(r => r.GroupWorldSize == 2);

        Task<RendezvousRound> late = c.NextRoundAsync(default);
        (RoundAction Action, string? Reason) check = (RoundAction.Continue, null);
        for (int i = 0; i < 100 && check.Action == RoundAction.Continue; i++)
        {
            await Task.Delay(20);
            check = await a.CheckAsync(first[0], default);
        }
        check.Action.ShouldBe(RoundAction.Restart);
        (await b.CheckAsync(first[1], default)).Action.ShouldBe(RoundAction.Restart);

        RendezvousRound[] second = await Task.WhenAll(a.NextRoundAsync(default), b.NextRoundAsync(default), late).WaitAsync(TimeSpan.FromSeconds(5));
        second.ShouldAllBe(r => r.GroupWorldSize == 3 && r.Round == 1 && r.RestartCount == 0);
        second.Select(r => r.GroupRank).Order().ShouldBe([0, 1, 2]);
        await beats.CancelAsync();
        await Task.WhenAll(heartbeats);
    }

    [Fact]
    public async Task SilentNode_IsNoticedWithinTheHeartbeatTimeout_SurvivorsAboveMinRestart()
    {
        var store = new MemoryKeyValueStore();
        using var beats = new CancellationTokenSource();
        using var silentBeats = new CancellationTokenSource();
        ElasticRendezvous[] nodes = [.. Enumerable.Range(0, 3).Select(i => new ElasticRendezvous(store, Settings(2, 3, heartbeat: 1.0), $"n{i}"))];
        Task[] heartbeats = [nodes[0].RunHeartbeatsAsync(beats.Token), nodes[1].RunHeartbeatsAsync(beats.Token), nodes[2].RunHeartbeatsAsync(silentBeats.Token)];
        RendezvousRound[] rounds = await Task.WhenAll(nodes.Select(n => n.NextRoundAsync(default))).WaitAsync(TimeSpan.FromSeconds(5));

        await silentBeats.CancelAsync(); // node 2 vanishes
        var clock = System.Diagnostics.Stopwatch.StartNew();
        (RoundAction Action, string? Reason) check = (RoundAction.Continue, null);
        while (check.Action == RoundAction.Continue && clock.Elapsed < TimeSpan.FromSeconds(10))
        {
            await Task.Delay(20);
            check = await nodes[0].CheckAsync(rounds[0], default);
        }
        check.Action.ShouldBe(RoundAction.Restart);
        check.Reason!.ShouldContain("n2");
        clock.Elapsed.ShouldBeLessThan(TimeSpan.FromSeconds(4)); // 1 s timeout + a beat; slack for a loaded CI machine

        RendezvousRound[] survivors = await Task.WhenAll(nodes[0].NextRoundAsync(default), nodes[1].NextRoundAsync(default)).WaitAsync(TimeSpan.FromSeconds(5));
        survivors.ShouldAllBe(r => r.GroupWorldSize == 2 && r.Round == 1);
        await beats.CancelAsync();
        await Task.WhenAll(heartbeats);
    }

    [Fact]
    public async Task SilentNode_LeavingFewerThanMin_FailsTheJob()
    {
        var store = new MemoryKeyValueStore();
        using var beats = new CancellationTokenSource();
        using var silentBeats = new CancellationTokenSource();
        var a = new ElasticRendezvous(store, Settings(2, 2, heartbeat: 1.0), "a");
        var b = new ElasticRendezvous(store, Settings(2, 2, heartbeat: 1.0), "b");
        Task beatA = a.RunHeartbeatsAsync(beats.Token);
        Task beatB = b.RunHeartbeatsAsync(silentBeats.Token);
        RendezvousRound[] rounds = await Task.WhenAll(a.NextRoundAsync(default), b.NextRoundAsync(default)).WaitAsync(TimeSpan.FromSeconds(5));
        await silentBeats.CancelAsync();

        (RoundAction Action, string? Reason) check = (RoundAction.Continue, null);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (check.Action == RoundAction.Continue && clock.Elapsed < TimeSpan.FromSeconds(10))
        {
            await Task.Delay(20);
            check = await a.CheckAsync(rounds[0], default);
        }
        check.Action.ShouldBe(RoundAction.Fail);
        check.Reason!.ShouldContain("fewer than --nnodes MIN 2");
        (await a.GetJobFailureAsync(default)).ShouldBe(check.Reason);
        await Should.ThrowAsync<LaunchException>(() => a.NextRoundAsync(default));
        await beats.CancelAsync();
        await Task.WhenAll(beatA, beatB);
    }

    [Fact]
    public async Task FinishedNode_ThatLeftAfterItsExitBarrier_IsNotTakenForLost()
    {
        var store = new MemoryKeyValueStore();
        using var beats = new CancellationTokenSource();
        using var finishedBeats = new CancellationTokenSource();
        var a = new ElasticRendezvous(store, Settings(2, 2, heartbeat: 1.0), "a");
        var b = new ElasticRendezvous(store, Settings(2, 2, heartbeat: 1.0), "b");
        Task beatA = a.RunHeartbeatsAsync(beats.Token);
        Task beatB = b.RunHeartbeatsAsync(finishedBeats.Token);
        RendezvousRound[] rounds = await Task.WhenAll(a.NextRoundAsync(default), b.NextRoundAsync(default)).WaitAsync(TimeSpan.FromSeconds(5));

        // b's workers succeeded; its barrier times out while a still runs, and b exits.
        (await b.ExitBarrierAsync(rounds[1], TimeSpan.FromMilliseconds(100), default)).ShouldBe(RoundAction.Continue);
        await finishedBeats.CancelAsync();
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (clock.Elapsed < TimeSpan.FromSeconds(2.5))
        {
            (await a.CheckAsync(rounds[0], default)).Action.ShouldBe(RoundAction.Continue);
            await Task.Delay(20);
        }
        await beats.CancelAsync();
        await Task.WhenAll(beatA, beatB);
    }

    [Fact]
    public async Task Failures_AreCountedOncePerRoundForTheJob_UntilTheBudgetIsUsedUp()
    {
        var store = new MemoryKeyValueStore();
        var a = new ElasticRendezvous(store, Settings(2, 2, maxRestarts: 1), "a");
        var b = new ElasticRendezvous(store, Settings(2, 2, maxRestarts: 1), "b");
        RendezvousRound[] first = await Task.WhenAll(a.NextRoundAsync(default), b.NextRoundAsync(default)).WaitAsync(TimeSpan.FromSeconds(5));

        // Both nodes report a failure of the same round: one restart.
        (await a.ReportFailureAsync(first[0], "a failed", default)).ShouldBeTrue();
        (await b.ReportFailureAsync(first[1], "b failed", default)).ShouldBeTrue();
        (await store.GetAsync("/kiln/rdzv/r/restarts", default)).ShouldBe(Encoding.ASCII.GetBytes("1"));

        RendezvousRound[] second = await Task.WhenAll(a.NextRoundAsync(default), b.NextRoundAsync(default)).WaitAsync(TimeSpan.FromSeconds(5));
        second.ShouldAllBe(r => r.RestartCount == 1 && r.Round == 1);

        (await b.ReportFailureAsync(second[1], "b failed again", default)).ShouldBeFalse();
        (await a.CheckAsync(second[0], default)).Action.ShouldBe(RoundAction.Fail);
        (await a.GetJobFailureAsync(default))!.ShouldContain("b failed again");
    }
}
