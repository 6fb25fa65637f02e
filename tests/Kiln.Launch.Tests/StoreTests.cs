using System.Net;
using System.Net.Sockets;
using System.Text;
using Kiln.Launch.Rendezvous;

namespace Kiln.Launch.Tests;

/// <summary>The store contract, over the in-process store and over the embedded TCP store on loopback.</summary>
public sealed class StoreTests : IAsyncLifetime
{
    private TcpStoreServer? _server;

    public Task InitializeAsync()
    {
        _server = TcpStoreServer.Start(new IPEndPoint(IPAddress.Loopback, 0));
        return Task.CompletedTask;
    }

    public async Task DisposeAsync()
    {
        if (_server is not null)
        {
            await _server.DisposeAsync();
        }
    }

    public static TheoryData<bool> Kinds => new() { false, true };

    private async Task<IKeyValueStore> CreateAsync(bool tcp) => tcp
        ? await TcpStoreClient.ConnectAsync("127.0.0.1", _server!.EndPoint.Port, TimeSpan.FromSeconds(5), CancellationToken.None)
        : new MemoryKeyValueStore();

    private static byte[] B(string text) => Encoding.UTF8.GetBytes(text);

    [Theory]
    [MemberData(nameof(Kinds))]
    public async Task SetGetDelete_RoundTrip(bool tcp)
    {
        await using IKeyValueStore sut = await CreateAsync(tcp);
        (await sut.GetAsync("a", default)).ShouldBeNull();
        await sut.SetAsync("a", B("one"), default);
        (await sut.GetAsync("a", default)).ShouldBe(B("one"));
        await sut.SetAsync("a", [], default);
        (await sut.GetAsync("a", default)).ShouldBe([]);
        (await sut.DeleteAsync("a", default)).ShouldBeTrue();
        (await sut.DeleteAsync("a", default)).ShouldBeFalse();
        (await sut.GetAsync("a", default)).ShouldBeNull();
    }

    [Theory]
    [MemberData(nameof(Kinds))]
    public async Task Add_CountsFromZero_AndRefusesNonIntegers(bool tcp)
    {
        await using IKeyValueStore sut = await CreateAsync(tcp);
        (await sut.AddAsync("n", 1, default)).ShouldBe(1);
        (await sut.AddAsync("n", 5, default)).ShouldBe(6);
        (await sut.AddAsync("n", -2, default)).ShouldBe(4);
        (await sut.GetAsync("n", default)).ShouldBe(B("4"));
        await sut.SetAsync("text", B("abc"), default);
        await Should.ThrowAsync<InvalidOperationException>(() => sut.AddAsync("text", 1, default));
    }

    [Theory]
    [MemberData(nameof(Kinds))]
    public async Task CompareSet_SwapsOnlyOnAMatch(bool tcp)
    {
        await using IKeyValueStore sut = await CreateAsync(tcp);
        (await sut.CompareSetAsync("k", null, B("first"), default)).ShouldBe(B("first"));
        (await sut.CompareSetAsync("k", null, B("second"), default)).ShouldBe(B("first"));
        (await sut.CompareSetAsync("k", B("wrong"), B("second"), default)).ShouldBe(B("first"));
        (await sut.CompareSetAsync("k", B("first"), B("second"), default)).ShouldBe(B("second"));
        (await sut.GetAsync("k", default)).ShouldBe(B("second"));
    }

    [Theory]
    [MemberData(nameof(Kinds))]
    public async Task Wait_ReturnsWhenAllKeysAreSet_AndTimesOut(bool tcp)
    {
        await using IKeyValueStore sut = await CreateAsync(tcp);
        await using IKeyValueStore other = await CreateAsync(tcp);
        IKeyValueStore writer = tcp ? other : sut;
        await Should.ThrowAsync<TimeoutException>(() => sut.WaitAsync(["x"], TimeSpan.FromMilliseconds(100), default));

        Task wait = sut.WaitAsync(["x", "y"], TimeSpan.FromSeconds(10), default);
        await writer.SetAsync("x", B("1"), default);
        await Task.Delay(50);
        wait.IsCompleted.ShouldBeFalse();
        // A pending WAIT does not hold up other calls on the same connection.
        (await sut.GetAsync("x", default)).ShouldBe(B("1"));
        await writer.SetAsync("y", B("2"), default);
        await wait.WaitAsync(TimeSpan.FromSeconds(5));
    }

    [Fact]
    public async Task ConcurrentClients_AddsAreAtomic()
    {
        var clients = new List<IKeyValueStore>();
        for (int i = 0; i < 8; i++)
        {
            clients.Add(await CreateAsync(tcp: true));
        }
        await Task.WhenAll(clients.Select(c => Task.Run(async () =>
        {
            for (int i = 0; i < 100; i++)
            {
                await c.AddAsync("counter", 1, default);
            }
        })));
        (await clients[0].AddAsync("counter", 0, default)).ShouldBe(800);
        long[] tickets = await Task.WhenAll(clients.Select(c => c.AddAsync("ticket", 1, default)));
        tickets.Order().ShouldBe([1, 2, 3, 4, 5, 6, 7, 8]);
        foreach (IKeyValueStore c in clients)
        {
            await c.DisposeAsync();
        }
    }

    [Fact]
    public async Task Client_WhenTheServerStops_FailsFastWithIOException()
    {
        TcpStoreServer server = TcpStoreServer.Start(new IPEndPoint(IPAddress.Loopback, 0));
        await using TcpStoreClient client = await TcpStoreClient.ConnectAsync("127.0.0.1", server.EndPoint.Port, TimeSpan.FromSeconds(5), default);
        Task wait = client.WaitAsync(["never"], TimeSpan.FromSeconds(30), default);
        await server.DisposeAsync();
        await Should.ThrowAsync<IOException>(() => wait.WaitAsync(TimeSpan.FromSeconds(5)));
        await Should.ThrowAsync<IOException>(() => client.GetAsync("a", default));
    }

    [Fact]
    public async Task Connect_WithNoServer_GivesUpAfterTheTimeout()
    {
        using var probe = new TcpListener(IPAddress.Loopback, 0);
        probe.Start();
        int port = ((IPEndPoint)probe.LocalEndpoint).Port;
        probe.Stop();
        var ex = await Should.ThrowAsync<LaunchException>(() => TcpStoreClient.ConnectAsync("127.0.0.1", port, TimeSpan.FromMilliseconds(400), default));
        ex.Message.ShouldContain($"127.0.0.1:{port}");
    }

    [Fact]
    public async Task Connect_ToSomethingElse_IsRefused()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        Task serve = Task.Run(async () =>
        {
            using Socket s = await listener.AcceptSocketAsync();
            await s.SendAsync(Encoding.ASCII.GetBytes("HTTP/1.1"));
            await Task.Delay(200);
        });
        await Should.ThrowAsync<LaunchException>(() => TcpStoreClient.ConnectAsync("127.0.0.1", port, TimeSpan.FromMilliseconds(500), default));
        await serve;
    }

    [Fact]
    public void Registry_ReturnsRegisteredFactories()
    {
        RendezvousStores.Register("test-memory", _ => new MemoryKeyValueStore());
        RendezvousStores.TryGet("TEST-MEMORY", out Func<string, IKeyValueStore> factory).ShouldBeTrue();
        factory("x").ShouldBeOfType<MemoryKeyValueStore>();
        RendezvousStores.TryGet("nope", out _).ShouldBeFalse();
    }
}
