using System.Diagnostics;
using System.Text;
using Kiln.Launch.Rendezvous;

namespace Kiln.Launch.Tests.Etcd;

/// <summary>The store contract run against <see cref="EtcdStore"/> on a real etcd: one run id per test.</summary>
[Collection(EtcdGroup.Name)]
public sealed class EtcdStoreContractTests(EtcdFixture etcd) : StoreContract
{
    private readonly string _runId = "contract-" + Guid.NewGuid().ToString("N")[..12];

    protected override Task<IKeyValueStore> ConnectAsync(CancellationToken cancellationToken) =>
        Task.FromResult<IKeyValueStore>(etcd.CreateStore(_runId));
}

/// <summary>What is particular to etcd: the key layout, leases, endpoints and errors.</summary>
[Collection(EtcdGroup.Name)]
public sealed class EtcdStoreTests(EtcdFixture etcd)
{
    [Fact]
    public async Task Set_WritesUnderTheRunPrefix()
    {
        await using EtcdStore sut = etcd.CreateStore("prefix-run");
        await sut.DeleteAllAsync(default);
        await sut.SetAsync("rank/0", Encoding.UTF8.GetBytes("host-a"), default);

        using var http = new HttpClient();
        var raw = new EtcdGateway(http, [etcd.ClientUrl], TimeSpan.FromSeconds(5));
        EtcdKeyValue? kv = await raw.GetAsync(Encoding.UTF8.GetBytes("/kiln/rdzv/prefix-run/rank/0"), default);
        kv.ShouldNotBeNull();
        Encoding.UTF8.GetString(kv.Value.Value).ShouldBe("host-a");
    }

    [Fact]
    public async Task Runs_DoNotSeeEachOthersKeys()
    {
        await using EtcdStore a = etcd.CreateStore();
        await using EtcdStore b = etcd.CreateStore();
        await a.SetAsync("k", [1], default);
        (await b.GetAsync("k", default)).ShouldBeNull();
    }

    [Fact]
    public async Task DeleteAll_RemovesEveryKeyOfTheRunOnly()
    {
        string run = "cleanup-" + Guid.NewGuid().ToString("N")[..8];
        await using EtcdStore sut = etcd.CreateStore(run);
        await using EtcdStore neighbour = etcd.CreateStore(run + "x");
        await sut.SetAsync("a", [1], default);
        await sut.SetAsync("b/c", [2], default);
        await neighbour.SetAsync("a", [3], default);
        (await sut.DeleteAllAsync(default)).ShouldBe(2);
        (await neighbour.GetAsync("a", default)).ShouldBe(new byte[] { 3 });
    }

    [Fact]
    public async Task LeaseTtl_KeysLiveWhileTheStoreLivesAndVanishAfter()
    {
        string run = "lease-" + Guid.NewGuid().ToString("N")[..8];
        await using EtcdStore reader = etcd.CreateStore(run);
        EtcdStore sut = etcd.CreateStore(run, leaseTtl: TimeSpan.FromSeconds(2));
        await sut.SetAsync("heartbeat/node-0", [1], default);
        await sut.AddAsync("members", 1, default);

        // Past the TTL: the keep-alive loop renewed the lease.
        await Task.Delay(TimeSpan.FromSeconds(2.5));
        (await reader.GetAsync("heartbeat/node-0", default)).ShouldNotBeNull();

        await sut.DisposeAsync();
        var clock = Stopwatch.StartNew();
        while ((await reader.GetAsync("heartbeat/node-0", default)) is not null)
        {
            clock.Elapsed.ShouldBeLessThan(TimeSpan.FromSeconds(8), "the lease should expire about 2 s after the store stops renewing it");
            await Task.Delay(100);
        }
        (await reader.GetAsync("members", default)).ShouldBeNull();
    }

    [Fact]
    public async Task Add_OnANonNumericValue_ThrowsNamingTheKey()
    {
        await using EtcdStore sut = etcd.CreateStore();
        await sut.SetAsync("name", Encoding.UTF8.GetBytes("not a number"), default);
        InvalidOperationException ex = await Should.ThrowAsync<InvalidOperationException>(() => sut.AddAsync("name", 1, default));
        ex.Message.ShouldContain("\"name\"");
    }

    [Fact]
    public async Task Wait_ManyWaitersOneWriter_AllReturn()
    {
        string run = "barrier-" + Guid.NewGuid().ToString("N")[..8];
        EtcdStore[] waiters = [.. Enumerable.Range(0, 6).Select(_ => etcd.CreateStore(run))];
        await using EtcdStore writer = etcd.CreateStore(run);
        try
        {
            Task[] waits = [.. waiters.Select(w => w.WaitAsync(["go"], TimeSpan.FromSeconds(10), default))];
            await Task.Delay(100);
            await writer.SetAsync("go", [1], default);
            await Task.WhenAll(waits).WaitAsync(TimeSpan.FromSeconds(10));
        }
        finally
        {
            foreach (EtcdStore w in waiters)
            {
                await w.DisposeAsync();
            }
        }
    }

    [Fact]
    public async Task Endpoints_FirstDownSecondUp_UsesTheSecond()
    {
        await using var sut = new EtcdStore(new EtcdStoreOptions { Endpoints = [new Uri("http://127.0.0.1:1"), etcd.ClientUrl], RunId = "failover" });
        await sut.SetAsync("k", [7], default);
        (await sut.GetAsync("k", default)).ShouldBe(new byte[] { 7 });
    }
}

/// <summary>Endpoint parsing and errors that need no etcd.</summary>
public sealed class EtcdStoreOptionsTests
{
    [Theory]
    [InlineData("etcd-0", "http://etcd-0:2379/")]
    [InlineData("10.0.0.5:2380", "http://10.0.0.5:2380/")]
    [InlineData("https://etcd.example:443", "https://etcd.example/")]
    [InlineData(" a:1 , b ", "http://a:1/|http://b:2379/")]
    public void ParseEndpoints_AcceptsHostPortAndUrls(string text, string expected)
    {
        string.Join('|', EtcdStoreOptions.ParseEndpoints(text).Select(u => u.ToString())).ShouldBe(expected);
    }

    [Theory]
    [InlineData("")]
    [InlineData(" , ")]
    [InlineData("ftp://x:1")]
    public void ParseEndpoints_Malformed_ThrowsLaunchException(string text)
    {
        Should.Throw<LaunchException>(() => EtcdStoreOptions.ParseEndpoints(text));
    }

    [Fact]
    public void RangeEnd_IncrementsTheLastByte()
    {
        EtcdStore.RangeEnd("/kiln/a/"u8.ToArray()).ShouldBe("/kiln/a0"u8.ToArray());
        EtcdStore.RangeEnd([0x61, 0xFF]).ShouldBe(new byte[] { 0x62 });
    }

    [Fact]
    public void WatchRange_IsTheMissingKeysCommonPrefix()
    {
        static string Key(string text) => Convert.ToBase64String(System.Text.Encoding.UTF8.GetBytes(text));
        (byte[] from, byte[] to) = EtcdStore.WatchRange([Key("/kiln/rdzv/r1/a/0"), Key("/kiln/rdzv/r1/a/1"), Key("/kiln/rdzv/r1/b")]);
        from.ShouldBe("/kiln/rdzv/r1/"u8.ToArray());
        to.ShouldBe("/kiln/rdzv/r10"u8.ToArray());
        EtcdStore.WatchRange([Key("/x/one")]).From.ShouldBe("/x/one"u8.ToArray());
        (byte[] allFrom, byte[] allTo) = EtcdStore.WatchRange([Key("a"), Key("b")]);
        allFrom.ShouldBe(new byte[] { 0 });
        allTo.ShouldBe(new byte[] { 0 });
    }

    [Fact]
    public async Task Set_NoEtcdListening_ThrowsLaunchExceptionNamingTheEndpoint()
    {
        await using var sut = new EtcdStore(new EtcdStoreOptions { Endpoints = [new Uri("http://127.0.0.1:1")], RunId = "down", RequestTimeout = TimeSpan.FromSeconds(2) });
        LaunchException ex = await Should.ThrowAsync<LaunchException>(() => sut.SetAsync("k", [1], default));
        ex.Message.ShouldContain("127.0.0.1:1");
    }

    [Fact]
    public void Create_RunIdWithSlash_ThrowsLaunchException()
    {
        Should.Throw<LaunchException>(() => new EtcdStore(new EtcdStoreOptions { Endpoints = [new Uri("http://127.0.0.1:1")], RunId = "a/b" }));
    }
}

/// <summary>The agent finds etcd by its <c>--rdzv-backend</c> name.</summary>
[Collection(EtcdGroup.Name)]
public sealed class EtcdRegistrationTests(EtcdFixture etcd)
{
    [Fact]
    public async Task RendezvousStores_Etcd_CreatesAnUnprefixedStoreForTheEndpoint()
    {
        RendezvousStores.TryGet("etcd", out Func<string, IKeyValueStore> factory).ShouldBeTrue();
        await using IKeyValueStore sut = factory($"{etcd.ClientUrl.Host}:{etcd.ClientUrl.Port}");
        EtcdStore store = sut.ShouldBeOfType<EtcdStore>();
        store.Options.Prefix.ShouldBeEmpty();

        string key = $"/kiln/rdzv/registered-{Guid.NewGuid():N}/k";
        await sut.SetAsync(key, [5], default);
        await sut.WaitAsync([key], TimeSpan.FromSeconds(5), default);
        (await sut.GetAsync(key, default)).ShouldBe(new byte[] { 5 });
        (await sut.DeleteAsync(key, default)).ShouldBeTrue();
    }
}
