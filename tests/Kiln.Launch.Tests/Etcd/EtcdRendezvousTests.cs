using System.Diagnostics;
using Kiln.Launch.Rendezvous;

namespace Kiln.Launch.Tests.Etcd;

/// <summary>
/// The agent's rendezvous over a real etcd, each node with its own client made by the registered <c>etcd</c> backend
/// (as <c>kiln agent --rdzv-backend etcd</c> does): rounds, late joiners and vanished nodes.
/// </summary>
[Collection(EtcdGroup.Name)]
public sealed class EtcdRendezvousTests(EtcdFixture etcd) : IAsyncLifetime
{
    private readonly string _runId = "rdzv-" + Guid.NewGuid().ToString("N")[..10];
    private readonly List<IKeyValueStore> _stores = [];

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        foreach (IKeyValueStore store in _stores)
        {
            await store.DisposeAsync();
        }
    }

    private ElasticRendezvous Node(string id, int min, int max, double heartbeat = 1, double lastCall = 0.3)
    {
        RendezvousStores.TryGet("etcd", out Func<string, IKeyValueStore> factory).ShouldBeTrue();
        IKeyValueStore store = factory($"{etcd.ClientUrl.Host}:{etcd.ClientUrl.Port}");
        _stores.Add(store);
        return new ElasticRendezvous(store, new RendezvousSettings
        {
            RunId = _runId,
            MinNodes = min,
            MaxNodes = max,
            LastCallTimeout = TimeSpan.FromSeconds(lastCall),
            HeartbeatTimeout = TimeSpan.FromSeconds(heartbeat),
            JoinTimeout = TimeSpan.FromSeconds(10),
        }, id);
    }

    [Fact]
    public async Task ThreeNodes_AtMax_CloseWithDistinctRanksAndOneMaster()
    {
        ElasticRendezvous[] nodes = [.. Enumerable.Range(0, 3).Select(i => Node($"n{i}", 2, 3, lastCall: 30))];
        RendezvousRound[] rounds = await Task.WhenAll(nodes.Select(n => n.NextRoundAsync(default))).WaitAsync(TimeSpan.FromSeconds(10));

        rounds.Select(r => r.GroupRank).Order().ShouldBe([0, 1, 2]);
        rounds.ShouldAllBe(r => r.GroupWorldSize == 3 && r.Round == 0);
        rounds.Select(r => (r.MasterAddress, r.MasterPort)).Distinct().Count().ShouldBe(1);

        // The rendezvous wrote its keys under /kiln/rdzv/<run_id>/ in etcd.
        await using EtcdStore run = etcd.CreateStore(_runId);
        (await run.DeleteAllAsync(default)).ShouldBeGreaterThan(0);
    }

    [Fact]
    public async Task LateNode_IsAdmittedByTheNextRound()
    {
        using var beats = new CancellationTokenSource();
        // A last call long enough for the late node to see the new round before it closes on a loaded machine.
        ElasticRendezvous a = Node("a", 2, 3, lastCall: 1.5);
        ElasticRendezvous b = Node("b", 2, 3, lastCall: 1.5);
        ElasticRendezvous c = Node("c", 2, 3, lastCall: 1.5);
        // Live nodes beat; without beats a slow round would (rightly) take them for lost.
        Task[] heartbeats = [a.RunHeartbeatsAsync(beats.Token), b.RunHeartbeatsAsync(beats.Token), c.RunHeartbeatsAsync(beats.Token)];
        RendezvousRound[] first = await Task.WhenAll(a.NextRoundAsync(default), b.NextRoundAsync(default)).WaitAsync(TimeSpan.FromSeconds(10));
        first.ShouldAllBe(r => r.GroupWorldSize == 2);

        Task<RendezvousRound> late = c.NextRoundAsync(default);
        (RoundAction Action, string? Reason) check = (RoundAction.Continue, null);
        var clock = Stopwatch.StartNew();
        while (check.Action == RoundAction.Continue && clock.Elapsed < TimeSpan.FromSeconds(10))
        {
            await Task.Delay(20);
            check = await a.CheckAsync(first[0], default);
        }
        check.Action.ShouldBe(RoundAction.Restart);

        RendezvousRound[] second = await Task.WhenAll(a.NextRoundAsync(default), b.NextRoundAsync(default), late).WaitAsync(TimeSpan.FromSeconds(10));
        second.ShouldAllBe(r => r.GroupWorldSize == 3 && r.Round == 1);
        await beats.CancelAsync();
        await Task.WhenAll(heartbeats);
    }

    [Fact]
    public async Task VanishedNode_IsNoticedWithinTheHeartbeatTimeout()
    {
        using var beats = new CancellationTokenSource();
        using var silent = new CancellationTokenSource();
        ElasticRendezvous[] nodes = [.. Enumerable.Range(0, 3).Select(i => Node($"n{i}", 2, 3, heartbeat: 1.0))];
        Task[] heartbeats = [nodes[0].RunHeartbeatsAsync(beats.Token), nodes[1].RunHeartbeatsAsync(beats.Token), nodes[2].RunHeartbeatsAsync(silent.Token)];
        RendezvousRound[] rounds = await Task.WhenAll(nodes.Select(n => n.NextRoundAsync(default))).WaitAsync(TimeSpan.FromSeconds(10));

        await silent.CancelAsync();
        var clock = Stopwatch.StartNew();
        (RoundAction Action, string? Reason) check = (RoundAction.Continue, null);
        while (check.Action == RoundAction.Continue && clock.Elapsed < TimeSpan.FromSeconds(10))
        {
            await Task.Delay(20);
            check = await nodes[0].CheckAsync(rounds[0], default);
        }
        check.Action.ShouldBe(RoundAction.Restart);
        check.Reason!.ShouldContain("n2");
        clock.Elapsed.ShouldBeLessThan(TimeSpan.FromSeconds(4)); // 1 s timeout + a beat; slack for a loaded CI machine

        RendezvousRound[] survivors = await Task.WhenAll(nodes[0].NextRoundAsync(default), nodes[1].NextRoundAsync(default)).WaitAsync(TimeSpan.FromSeconds(10));
        survivors.ShouldAllBe(r => r.GroupWorldSize == 2 && r.Round == 1);
        await beats.CancelAsync();
        await Task.WhenAll(heartbeats);
    }
}
