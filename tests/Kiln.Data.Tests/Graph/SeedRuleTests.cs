using System.Text.Json.Nodes;
using static Kiln.Data.Tests.Graph.TestGraphs;

namespace Kiln.Data.Tests.Graph;

/// <summary>docs/data.md, "Shuffle, shard and seeds": order = f(seed, epoch, rank, world size, worker).</summary>
public sealed class SeedRuleTests
{
    private const int Count = 103;

    private static DataGraph TwoLevelShuffle() => Build("local",
        Node("src", "range", parameters: new() { ["count"] = Count }),
        Node("global", "shuffle", ["src"], new() { ["buffer"] = Count }),
        Node("shard", "shard", ["global"]),
        Node("local", "shuffle", ["shard"], new() { ["buffer"] = 8 }));

    public static TheoryData<int, int> Topologies()
    {
        var data = new TheoryData<int, int>();
        for (int ranks = 1; ranks <= 4; ranks++)
        {
            for (int workers = 1; workers <= 3; workers++)
            {
                data.Add(ranks, workers);
            }
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(Topologies))]
    public void OneEpochOverAllRanks_YieldsEverySampleExactlyOnce_AndRepeatsForTheSameSeed(int ranks, int workers)
    {
        DataGraph graph = TwoLevelShuffle();
        List<long>[] perRank = [.. Enumerable.Range(0, ranks).Select(r => ReadAll<long>(graph, Options(r, ranks, workers, seed: 42)))];

        perRank.SelectMany(r => r).Order().ShouldBe(Enumerable.Range(0, Count).Select(i => (long)i));
        perRank.Max(r => r.Count).ShouldBeLessThanOrEqualTo((Count / (ranks * workers) + 1) * workers);
        for (int r = 0; r < ranks; r++)
        {
            ReadAll<long>(graph, Options(r, ranks, workers, seed: 42)).ShouldBe(perRank[r], $"rank {r} again");
        }
    }

    [Fact]
    public void Order_ChangesWithSeedAndEpoch_AndNeverIsTheInputOrder()
    {
        DataGraph graph = TwoLevelShuffle();

        List<long> a = ReadAll<long>(graph, Options(0, 1, 1, seed: 1));
        List<long> b = ReadAll<long>(graph, Options(0, 1, 1, seed: 2));
        List<long> nextEpoch = ReadAll<long>(graph, Options(0, 1, 1, seed: 1), epoch: 1);

        a.ShouldNotBe(b);
        a.ShouldNotBe(nextEpoch);
        a.ShouldNotBe(Enumerable.Range(0, Count).Select(i => (long)i));
        a.Order().ShouldBe(b.Order());
    }

    [Fact]
    public void ShuffleBeforeTheShard_IsSharedByAllRanks_AfterItDiffersPerRank()
    {
        DataGraph globalOnly = Build("shard",
            Node("src", "range", parameters: new() { ["count"] = Count }),
            Node("global", "shuffle", ["src"], new() { ["buffer"] = Count }),
            Node("shard", "shard", ["global"]));
        DataGraph globalOrder = Build("global",
            Node("src", "range", parameters: new() { ["count"] = Count }),
            Node("global", "shuffle", ["src"], new() { ["buffer"] = Count }));

        List<long> everything = ReadAll<long>(globalOrder, Options(0, 1, 1, seed: 7));
        List<long> rank1 = ReadAll<long>(globalOnly, Options(1, 2, 1, seed: 7));

        // Rank 1 of 2 sees exactly the odd positions of the shared permutation.
        rank1.ShouldBe(everything.Where((_, i) => i % 2 == 1));
    }

    private static DataLoaderOptions Options(int rank, int ranks, int workers, ulong seed) =>
        new() { Seed = seed, Rank = rank, WorldSize = ranks, Workers = workers };

    [Fact]
    public void Shard_WorkersAreNumberedWorkerMajor_LikePyTorch()
    {
        DataGraph graph = Build("shard",
            Node("src", "items", parameters: new() { ["values"] = new JsonArray(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11) }),
            Node("shard", "shard", ["src"]));

        // 2 ranks x 2 workers: worker w of rank r reads shard w*2 + r; the loader takes workers in turn.
        ReadAll<long>(graph, Options(1, 2, 2, seed: 0)).ShouldBe([1L, 3, 5, 7, 9, 11]);
        new PipelineContext(Rank: 1, WorldSize: 2, Worker: 1, Workers: 2).ShardIndex.ShouldBe(3);
    }
}
