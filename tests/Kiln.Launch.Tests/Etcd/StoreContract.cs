using System.Diagnostics;
using System.Text;
using Kiln.Launch.Rendezvous;

namespace Kiln.Launch.Tests.Etcd;

/// <summary>
/// What every <see cref="IKeyValueStore"/> must do (torch's Store semantics), run against each implementation: derive,
/// and make <see cref="ConnectAsync"/> return a new client of one fresh store per test.
/// </summary>
/// <remarks>
/// xUnit creates one instance of the derived class per test: every client that instance connects must see the same
/// keys, and a new instance must start from an empty store (a new run id, a new server). Clients are disposed at the
/// end of each test.
/// </remarks>
public abstract class StoreContract : IAsyncLifetime
{
    private static readonly TimeSpan s_wait = TimeSpan.FromSeconds(10);
    private readonly List<IKeyValueStore> _clients = [];

    /// <summary>A new client of this test's store.</summary>
    protected abstract Task<IKeyValueStore> ConnectAsync(CancellationToken cancellationToken);

    public virtual Task InitializeAsync() => Task.CompletedTask;

    public virtual async Task DisposeAsync()
    {
        foreach (IKeyValueStore client in _clients)
        {
            await client.DisposeAsync();
        }
    }

    [Fact]
    public async Task Set_ThenGet_ReturnsTheValue()
    {
        IKeyValueStore sut = await ClientAsync();
        await sut.SetAsync("a", Bytes("hello"), default);
        (await sut.GetAsync("a", default)).ShouldBe(Bytes("hello"));
    }

    [Fact]
    public async Task Set_FromOneClient_IsSeenByAnother()
    {
        IKeyValueStore writer = await ClientAsync();
        IKeyValueStore reader = await ClientAsync();
        await writer.SetAsync("shared/key", [0, 1, 2, 255], default);
        (await reader.GetAsync("shared/key", default)).ShouldBe(new byte[] { 0, 1, 2, 255 });
    }

    [Fact]
    public async Task Set_Twice_OverwritesAndKeepsEmptyValues()
    {
        IKeyValueStore sut = await ClientAsync();
        await sut.SetAsync("k", Bytes("one"), default);
        await sut.SetAsync("k", [], default);
        (await sut.GetAsync("k", default)).ShouldBe(Array.Empty<byte>());
    }

    [Fact]
    public async Task Get_MissingKey_ReturnsNull()
    {
        IKeyValueStore sut = await ClientAsync();
        (await sut.GetAsync("never-set", default)).ShouldBeNull();
    }

    [Fact]
    public async Task Add_MissingKey_StartsFromZero()
    {
        IKeyValueStore sut = await ClientAsync();
        (await sut.AddAsync("counter", 5, default)).ShouldBe(5);
        (await sut.AddAsync("counter", -7, default)).ShouldBe(-2);
        (await sut.AddAsync("counter", 0, default)).ShouldBe(-2);
    }

    [Fact]
    public async Task Add_KeepsTheCounterAsDecimalText()
    {
        // torch's TCPStore stores counters as ASCII decimal: set "41", add 1 → 42, get "42".
        IKeyValueStore sut = await ClientAsync();
        await sut.SetAsync("n", Bytes("41"), default);
        (await sut.AddAsync("n", 1, default)).ShouldBe(42);
        (await sut.GetAsync("n", default)).ShouldBe(Bytes("42"));
    }

    [Fact]
    public async Task Add_EightConcurrentClients_ExactTotal()
    {
        const int Clients = 8;
        const int AddsEach = 25;
        IKeyValueStore[] clients = await Task.WhenAll(Enumerable.Range(0, Clients).Select(_ => ClientAsync()));
        long[][] results = await Task.WhenAll(clients.Select(async (client, i) =>
        {
            var seen = new long[AddsEach];
            for (int n = 0; n < AddsEach; n++)
            {
                seen[n] = await client.AddAsync("total", i + 1, default);
            }
            return seen;
        }));
        long expected = AddsEach * Enumerable.Range(1, Clients).Sum();
        (await clients[0].AddAsync("total", 0, default)).ShouldBe(expected);
        // Every add saw a distinct running total: no two adds were merged.
        results.SelectMany(r => r).Distinct().Count().ShouldBe(Clients * AddsEach);
    }

    [Fact]
    public async Task CompareSet_MissingKeyAndNullExpected_SetsIt()
    {
        IKeyValueStore sut = await ClientAsync();
        (await sut.CompareSetAsync("cas", null, Bytes("first"), default)).ShouldBe(Bytes("first"));
        (await sut.GetAsync("cas", default)).ShouldBe(Bytes("first"));
    }

    [Fact]
    public async Task CompareSet_MatchingExpected_ReplacesTheValue()
    {
        IKeyValueStore sut = await ClientAsync();
        await sut.SetAsync("cas", Bytes("v1"), default);
        (await sut.CompareSetAsync("cas", Bytes("v1"), Bytes("v2"), default)).ShouldBe(Bytes("v2"));
        (await sut.GetAsync("cas", default)).ShouldBe(Bytes("v2"));
    }

    [Fact]
    public async Task CompareSet_WrongExpected_LeavesTheValueAndReturnsIt()
    {
        IKeyValueStore sut = await ClientAsync();
        await sut.SetAsync("cas", Bytes("current"), default);
        (await sut.CompareSetAsync("cas", Bytes("stale"), Bytes("new"), default)).ShouldBe(Bytes("current"));
        (await sut.CompareSetAsync("cas", null, Bytes("new"), default)).ShouldBe(Bytes("current"));
        (await sut.GetAsync("cas", default)).ShouldBe(Bytes("current"));
    }

    [Fact]
    public async Task CompareSet_MissingKeyButExpectedValue_LeavesItUnsetAndReturnsExpected()
    {
        // torch's TCPStore answers a compare-set on a missing key with the expected value (and sets nothing).
        IKeyValueStore sut = await ClientAsync();
        (await sut.CompareSetAsync("cas", Bytes("something"), Bytes("new"), default)).ShouldBe(Bytes("something"));
        (await sut.GetAsync("cas", default)).ShouldBeNull();
    }

    [Fact]
    public async Task CompareSet_EightClientsRace_OnlyOneWins()
    {
        const int Clients = 8;
        IKeyValueStore[] clients = await Task.WhenAll(Enumerable.Range(0, Clients).Select(_ => ClientAsync()));
        using var go = new ManualResetEventSlim();
        Task<byte[]>[] racers = [.. clients.Select((client, i) => Task.Run(async () =>
        {
            go.Wait();
            return await client.CompareSetAsync("leader", null, Bytes($"node-{i}"), default);
        }))];
        go.Set();
        byte[][] results = await Task.WhenAll(racers);
        byte[] winner = (await clients[0].GetAsync("leader", default)).ShouldNotBeNull();
        results.ShouldAllBe(r => r.SequenceEqual(winner));
        Enumerable.Range(0, Clients).Count(i => Bytes($"node-{i}").SequenceEqual(winner)).ShouldBe(1);
    }

    [Fact]
    public async Task Wait_KeysAlreadySet_ReturnsAtOnce()
    {
        IKeyValueStore sut = await ClientAsync();
        await sut.SetAsync("x", [1], default);
        await sut.SetAsync("y", [2], default);
        await sut.WaitAsync(["x", "y"], s_wait, default);
    }

    [Fact]
    public async Task Wait_KeysSetLaterByAnotherClient_Returns()
    {
        IKeyValueStore waiter = await ClientAsync();
        IKeyValueStore writer = await ClientAsync();
        await writer.SetAsync("ready/0", [1], default);
        Task wait = waiter.WaitAsync(["ready/0", "ready/1", "ready/2"], s_wait, default);
        await Task.Delay(100);
        wait.IsCompleted.ShouldBeFalse();
        await writer.SetAsync("unrelated", [9], default);
        await writer.SetAsync("ready/1", [1], default);
        await writer.AddAsync("ready/2", 1, default);
        await wait.WaitAsync(s_wait);
    }

    [Fact]
    public async Task Wait_KeyNeverSet_ThrowsTimeoutExceptionAfterTheTimeout()
    {
        IKeyValueStore sut = await ClientAsync();
        var elapsed = Stopwatch.StartNew();
        await Should.ThrowAsync<TimeoutException>(() => sut.WaitAsync(["missing"], TimeSpan.FromMilliseconds(300), default));
        elapsed.Elapsed.ShouldBeGreaterThanOrEqualTo(TimeSpan.FromMilliseconds(250));
        elapsed.Elapsed.ShouldBeLessThan(TimeSpan.FromSeconds(5));
    }

    [Fact]
    public async Task Wait_Cancelled_ThrowsOperationCanceledException()
    {
        IKeyValueStore sut = await ClientAsync();
        using var cts = new CancellationTokenSource(TimeSpan.FromMilliseconds(200));
        await Should.ThrowAsync<OperationCanceledException>(() => sut.WaitAsync(["missing"], s_wait, cts.Token));
    }

    [Fact]
    public async Task Delete_ExistingKey_ReturnsTrueAndRemovesIt()
    {
        IKeyValueStore sut = await ClientAsync();
        await sut.SetAsync("gone", [1], default);
        (await sut.DeleteAsync("gone", default)).ShouldBeTrue();
        (await sut.GetAsync("gone", default)).ShouldBeNull();
        (await sut.DeleteAsync("gone", default)).ShouldBeFalse();
    }

    [Fact]
    public async Task Delete_MissingKey_ReturnsFalse()
    {
        IKeyValueStore sut = await ClientAsync();
        (await sut.DeleteAsync("never", default)).ShouldBeFalse();
    }

    [Fact]
    public async Task Delete_ThenAdd_StartsAgainFromZero()
    {
        IKeyValueStore sut = await ClientAsync();
        await sut.AddAsync("c", 10, default);
        await sut.DeleteAsync("c", default);
        (await sut.AddAsync("c", 1, default)).ShouldBe(1);
    }

    protected static byte[] Bytes(string text) => Encoding.UTF8.GetBytes(text);

    /// <summary>Connects a client that is disposed at the end of the test.</summary>
    protected async Task<IKeyValueStore> ClientAsync()
    {
        IKeyValueStore client = await ConnectAsync(default);
        lock (_clients)
        {
            _clients.Add(client);
        }
        return client;
    }
}
