using System.Text.Json.Nodes;
using static Kiln.Data.Tests.Graph.TestGraphs;

namespace Kiln.Data.Tests.Graph;

/// <summary>Save mid-epoch, resume in a fresh loader: the rest equals what an uninterrupted run yields.</summary>
public sealed class ResumeTests
{
    private static DataGraph ShuffleParallelMapPrefetch() => Build("prefetch",
        Node("src", "range", parameters: new() { ["count"] = 200 }),
        Node("shuffle", "shuffle", ["src"], new() { ["buffer"] = 16 }),
        Node("shard", "shard", ["shuffle"]),
        Node("x10", "map", ["shard"], new() { ["fn"] = "slow_times10", ["threads"] = 3, ["in_flight"] = 5 }),
        Node("local", "shuffle", ["x10"], new() { ["buffer"] = 5 }),
        Node("batch", "batch", ["local"], new() { ["size"] = 3 }),
        Node("prefetch", "prefetch", ["batch"], new() { ["size"] = 4 }));

    [Theory]
    [InlineData(1, 0)]
    [InlineData(1, 1)]
    [InlineData(1, 17)]
    [InlineData(1, 25)]
    [InlineData(1, 33)]
    [InlineData(2, 5)]
    [InlineData(3, 29)]
    public void Resume_AtAnyPoint_YieldsExactlyTheUninterruptedRest(int workers, int stopAfter)
    {
        DataGraph graph = ShuffleParallelMapPrefetch();
        var options = new DataLoaderOptions { Seed = 3, Workers = workers, Rank = 1, WorldSize = 2 };
        List<string> reference = ReadAll<long[]>(graph, options, epoch: 2).Select(Show).ToList();
        reference.Count.ShouldBeGreaterThan(stopAfter);

        string saved;
        using (var first = new DataLoader<long[]>(graph, options))
        {
            first.StartEpoch(2);
            for (int i = 0; i < stopAfter; i++)
            {
                first.TryNext(out long[] batch).ShouldBeTrue();
                Show(batch).ShouldBe(reference[i]);
            }
            saved = first.SaveState().ToJsonString();
        }

        using var resumed = new DataLoader<long[]>(graph, options);
        resumed.LoadState(JsonNode.Parse(saved)!.AsObject());

        resumed.Epoch.ShouldBe(2);
        resumed.ReadToEnd().Select(Show).ShouldBe(reference.Skip(stopAfter));
    }

    [Fact]
    public void Resume_StateFromAnotherGraphOrSeed_IsRefusedWithTheReason()
    {
        DataGraph graph = ShuffleParallelMapPrefetch();
        using var loader = new DataLoader<long[]>(graph, new DataLoaderOptions { Seed = 1 });
        loader.StartEpoch(0);
        loader.TryNext(out _);
        JsonObject state = loader.SaveState();

        using var otherSeed = new DataLoader<long[]>(graph, new DataLoaderOptions { Seed = 2 });
        Should.Throw<DataPipelineException>(() => otherSeed.LoadState(state)).Message.ShouldContain("seed");
        using var otherGraph = new DataLoader<long[]>(DataGraph.Build(graph.Spec.Remove("local"), Registry()), new DataLoaderOptions { Seed = 1 });
        Should.Throw<DataPipelineException>(() => otherGraph.LoadState(state)).Message.ShouldContain("graph");
    }

    [Fact]
    public void Resume_SmallState_NoItemsAreSerialized()
    {
        DataGraph graph = ShuffleParallelMapPrefetch();
        using var loader = new DataLoader<long[]>(graph);
        loader.StartEpoch(0);
        for (int i = 0; i < 20; i++)
        {
            loader.TryNext(out _);
        }

        // Positions, read numbers and snapshots, not items: a few KB whatever the item size.
        loader.SaveState().ToJsonString().Length.ShouldBeLessThan(16_000);
    }

    private static string Show(long[] batch) => string.Join(",", batch);
}
