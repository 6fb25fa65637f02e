using System.Net;
using Kiln.Launch.Rendezvous;

namespace Kiln.Launch.Tests.Etcd;

/// <summary>The same store contract on the agent's embedded TCP store: one server per test, clients over loopback.</summary>
public sealed class TcpStoreContractTests : StoreContract
{
    private TcpStoreServer _server = null!;

    public override Task InitializeAsync()
    {
        _server = TcpStoreServer.Start(new IPEndPoint(IPAddress.Loopback, 0));
        return Task.CompletedTask;
    }

    public override async Task DisposeAsync()
    {
        await base.DisposeAsync();
        await _server.DisposeAsync();
    }

    protected override async Task<IKeyValueStore> ConnectAsync(CancellationToken cancellationToken) =>
        await TcpStoreClient.ConnectAsync("127.0.0.1", _server.EndPoint.Port, TimeSpan.FromSeconds(10), cancellationToken);
}

/// <summary>The same store contract on the in-process store: every client is the one store.</summary>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Design", "CA1001", Justification = "StoreContract disposes every client it handed out; this store is each of them.")]
public sealed class MemoryStoreContractTests : StoreContract
{
    private readonly IKeyValueStore _store = new MemoryKeyValueStore();

    protected override Task<IKeyValueStore> ConnectAsync(CancellationToken cancellationToken) => Task.FromResult(_store);
}
