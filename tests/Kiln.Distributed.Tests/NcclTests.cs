using System.Net;
using System.Net.Sockets;
using Kiln.Distributed.Nccl;

namespace Kiln.Distributed.Tests;

/// <summary>
/// What of the nccl backend runs without a GPU: the hand-over of NCCL's unique id from rank 0 over TCP on loopback, and
/// the errors of a host without CUDA. The collectives themselves run on a GPU host (benchmarks/distributed/gpu-nccl.sh).
/// </summary>
public sealed class NcclTests
{
    private static int FreePort()
    {
        using var probe = new TcpListener(IPAddress.Loopback, 0);
        probe.Start();
        return ((IPEndPoint)probe.LocalEndpoint).Port;
    }

    private static byte[] Id()
    {
        byte[] id = new byte[NcclApi.UniqueIdBytes];
        new Random(5).NextBytes(id);
        return id;
    }

    [Fact]
    public async Task UniqueId_ReachesEveryRank_EvenWhenTheyConnectBeforeRankZeroListens()
    {
        int port = FreePort();
        byte[] id = Id();
        // Ranks 1..3 start first and retry until rank 0 listens.
        Task<byte[]>[] fetches = [.. Enumerable.Range(1, 3).Select(rank => Task.Run(() => NcclIdExchange.Fetch("127.0.0.1", port, rank, 4, TimeSpan.FromSeconds(20))))];
        await Task.Delay(300);
        Task serve = Task.Run(() => NcclIdExchange.Serve(id, port, 4, TimeSpan.FromSeconds(20)));
        byte[][] received = await Task.WhenAll(fetches).WaitAsync(TimeSpan.FromSeconds(30));
        await serve.WaitAsync(TimeSpan.FromSeconds(30));
        received.ShouldAllBe(r => r.SequenceEqual(id));
    }

    [Fact]
    public async Task RankZero_NamesTheRanksThatNeverCame()
    {
        int port = FreePort();
        Task<byte[]> rank1 = Task.Run(() => NcclIdExchange.Fetch("127.0.0.1", port, 1, 3, TimeSpan.FromSeconds(20)));
        var error = await Should.ThrowAsync<DistributedException>(Task.Run(() => NcclIdExchange.Serve(Id(), port, 3, TimeSpan.FromSeconds(1.5))));
        error.Message.ShouldContain("rank(s) 2 of 3");
        error.Message.ShouldContain($"port {port}");
        (await rank1.WaitAsync(TimeSpan.FromSeconds(10))).ShouldBe(Id());
    }

    [Fact]
    public async Task DifferentWorldSizes_AreRefused()
    {
        int port = FreePort();
        Task serve = Task.Run(() => NcclIdExchange.Serve(Id(), port, 2, TimeSpan.FromSeconds(10)));
        _ = Task.Run(() => NcclIdExchange.Fetch("127.0.0.1", port, 1, 3, TimeSpan.FromSeconds(3)));
        var error = await Should.ThrowAsync<DistributedException>(serve.WaitAsync(TimeSpan.FromSeconds(15)));
        error.Message.ShouldContain("WORLD_SIZE=3");
        error.Message.ShouldContain("WORLD_SIZE=2");
    }

    [Fact]
    public void Fetch_GivesUp_AfterItsTimeout_NamingTheAddress()
    {
        int port = FreePort();
        var error = Should.Throw<DistributedException>(() => NcclIdExchange.Fetch("127.0.0.1", port, 1, 2, TimeSpan.FromSeconds(1)));
        error.Message.ShouldContain($"127.0.0.1:{port}");
        error.Message.ShouldContain("rank 1");
    }

    [Fact]
    public void Nccl_OnAHostWithoutCuda_SaysSoAndPointsAtMpi()
    {
        var error = Should.Throw<DistributedException>(() => ProcessGroups.Initialize("nccl"));
        error.Message.ShouldContain("needs CUDA");
        error.Message.ShouldContain("mpi backend");
    }

    [Fact]
    public void UnknownBackend_IsAnArgumentError()
    {
        var error = Should.Throw<ArgumentException>(() => ProcessGroups.Initialize("gloo"));
        error.Message.ShouldContain("'gloo'");
    }

    [Fact]
    public void NcclDatatypes_AndOps_FollowNcclH()
    {
        NcclApi.Datatype(TorchSharp.torch.ScalarType.Float32).ShouldBe(7);
        NcclApi.Datatype(TorchSharp.torch.ScalarType.BFloat16).ShouldBe(9);
        NcclApi.Op(ReduceOp.Average).ShouldBe(4);
        Should.Throw<NotSupportedException>(() => NcclApi.Datatype(TorchSharp.torch.ScalarType.Bool)).Message.ShouldContain("Bool");
    }
}
